module github.com/sendense/sendense/shared

go 1.26
