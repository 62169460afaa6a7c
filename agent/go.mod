module github.com/sendense/sendense/agent

go 1.26

require github.com/sendense/sendense/shared v0.0.0

replace github.com/sendense/sendense/shared => ../shared
