package config

import _ "embed"

// Example is a complete, commented configuration with every key at its default and an example
// source commented out: what `sendense-agent config example` prints and the packages install as
// /etc/sendense/agent.yaml (packaging/config/agent.yaml links to this file).
//
//go:embed example.yaml
var Example string
