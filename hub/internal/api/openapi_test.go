package api_test

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"

	hubapi "github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/shared/api"
)

// The OpenAPI document describes every registered route, and only those.
func TestOpenAPIMatchesTheRouter(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		resp, err := h.client(nil).Get(h.URL + api.PathOpenAPI)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("openapi.json: %v", err)
		}
		defer resp.Body.Close()
		var doc struct {
			OpenAPI string                                `json:"openapi"`
			Paths   map[string]map[string]json.RawMessage `json:"paths"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
			t.Fatalf("not an OpenAPI 3 document: %v", err)
		}
		var described []string
		for path, ops := range doc.Paths {
			segs := strings.Split(path, "/")
			for i, s := range segs {
				if strings.HasPrefix(s, "{") {
					segs[i] = ":" + strings.Trim(s, "{}")
				}
			}
			for m := range ops {
				described = append(described, strings.ToUpper(m)+" "+strings.Join(segs, "/"))
			}
		}
		sort.Strings(described)
		var registered []string
		var health struct {
			SystemInfo struct {
				APIEndpoints []struct{ Method, Path string } `json:"api_endpoints"`
			} `json:"system_info"`
		}
		r, _ := h.client(nil).Get(h.URL + "/api/v1/debug/health")
		_ = json.NewDecoder(r.Body).Decode(&health)
		r.Body.Close()
		for _, e := range health.SystemInfo.APIEndpoints {
			registered = append(registered, e.Method+" "+e.Path)
		}
		sort.Strings(registered)
		if strings.Join(described, "\n") != strings.Join(registered, "\n") {
			t.Fatalf("routes and document differ:\nregistered:\n%s\n\ndescribed:\n%s", strings.Join(registered, "\n"), strings.Join(described, "\n"))
		}
		if strings.Join(hubapi.DescribedRoutes(), "\n") != strings.Join(described, "\n") {
			t.Fatal("DescribedRoutes disagrees with the served document")
		}
	})
}
