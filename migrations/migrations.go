// Package migrations embeds the catalog schema migrations, one folder per SQL dialect.
//
// Files are named YYYYMMDDHHMMSS_what_it_does.up.sql and .down.sql and are applied by bun's
// migrator. Statements inside one file are separated by a line "--bun:split". MariaDB/MySQL DDL is
// not transactional, so every migration must be safe to re-run after a partial failure or be
// small enough that it cannot fail half-way.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed mysql/*.sql sqlite/*.sql
var files embed.FS

// Dialects lists the folders that FS accepts.
var Dialects = []string{"mysql", "sqlite"}

// FS returns the migrations of one dialect ("mysql" or "sqlite") as their own file system. Each
// dialect is loaded alone: handing bun's discovery the root would merge both folders.
func FS(dialect string) (fs.FS, error) {
	switch dialect {
	case "mysql", "sqlite":
		return fs.Sub(files, dialect)
	default:
		return nil, fmt.Errorf("no migrations for dialect %q", dialect)
	}
}
