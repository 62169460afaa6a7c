package api_test

import (
	"os"
	"testing"
)

// TestMain removes what tests of this package share across tests (the file-restore fixture).
func TestMain(m *testing.M) {
	code := m.Run()
	if fsFixture.dir != "" {
		_ = os.RemoveAll(fsFixture.dir)
	}
	os.Exit(code)
}
