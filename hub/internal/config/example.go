package config

import _ "embed"

// Example is a complete, commented configuration with every key at its default (data_dir set
// for a packaged install): what `sendense-hub config example` prints and the packages install
// as /etc/sendense/hub.yaml (packaging/config/hub.yaml links to this file).
//
//go:embed example.yaml
var Example string
