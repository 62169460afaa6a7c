// Package opstest holds the tests of what operators install next to Sendense: the metrics both
// daemons serve (linted with promtool), the Grafana dashboard (every query names an exported
// metric) and the Prometheus alert rules (checked and unit-tested with promtool).
package opstest
