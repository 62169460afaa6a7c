module github.com/sendense/sendense/migrations

go 1.26
