package api_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricValue returns the value of the counter or gauge series name{label=value} in reg (the
// only series when label is empty).
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// The identity and policy services register their collectors on the registry they are given.
func TestServicesRegisterTheirCollectors(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		h.enrollAgent("a1")
		if got := metricValue(t, h.Reg, "sendense_hub_agents", "status", "active"); got != 1 {
			t.Fatalf("sendense_hub_agents{status=active} = %v", got)
		}
		if got := metricValue(t, h.Reg, "sendense_hub_vms_unprotected", "", ""); got != 0 {
			t.Fatalf("sendense_hub_vms_unprotected = %v", got)
		}
	})
}
