//go:build tools

// Package weed only pins the SeaweedFS module for scripts/tools.sh, which builds its `weed`
// command into .tools/.
package weed

import _ "github.com/seaweedfs/seaweedfs/weed"
