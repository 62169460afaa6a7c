package catalog_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
)

// Open registers the catalog's metrics on the registry in its options, and counts failed queries.
func TestOpenRegistersItsMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := catalogtest.Options(t, catalog.DriverSQLite)
	opts.Registerer = reg
	c, err := catalog.Open(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.VMByContextID(t.Context(), "ctx-x"); err == nil {
		t.Fatal("a query on an unmigrated catalog succeeded")
	}
	want := `
# HELP sendense_hub_catalog_query_errors_total Catalog queries that failed (not counting 'no rows'), by operation.
# TYPE sendense_hub_catalog_query_errors_total counter
sendense_hub_catalog_query_errors_total{operation="DELETE"} 0
sendense_hub_catalog_query_errors_total{operation="INSERT"} 0
sendense_hub_catalog_query_errors_total{operation="OTHER"} 0
sendense_hub_catalog_query_errors_total{operation="SELECT"} 1
sendense_hub_catalog_query_errors_total{operation="UPDATE"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sendense_hub_catalog_query_errors_total"); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, "sendense_hub_catalog_queries_total", "SELECT"); n != 1 {
		t.Fatalf("sendense_hub_catalog_queries_total{operation=\"SELECT\"} = %v, want 1", n)
	}
}

// counterValue returns the value of the series of a counter with label operation=op.
func counterValue(t *testing.T, reg *prometheus.Registry, name, op string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == name && l.GetName() == "operation" && l.GetValue() == op {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{operation=%q} not registered", name, op)
	return 0
}
