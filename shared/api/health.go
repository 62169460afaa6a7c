package api

// Health is the body of GET /api/v1/debug/health.
type Health struct {
	Status        string     `json:"status"` // "ok" or "degraded"
	Version       string     `json:"version"`
	UptimeSeconds float64    `json:"uptime_seconds"`
	Catalog       Check      `json:"catalog"`
	Repository    Check      `json:"repository"`
	SystemInfo    SystemInfo `json:"system_info"`
}

// Check is the outcome of one health probe.
type Check struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// SystemInfo describes the running hub.
type SystemInfo struct {
	GoVersion     string     `json:"go_version"`
	CatalogDriver string     `json:"catalog_driver"`
	APIEndpoints  []Endpoint `json:"api_endpoints"`
}

// Endpoint is one registered route.
type Endpoint struct {
	Method string `json:"method"`
	Path   string `json:"path"`
}
