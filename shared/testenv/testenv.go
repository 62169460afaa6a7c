// Package testenv holds the helpers every module's tests share: skipping (or, under
// SENDENSE_TEST_STRICT, failing) when a dependency is missing, waiting for a condition with a
// deadline, a log buffer safe for concurrent writers, a TCP port that refuses connections
// (ClosedPort) and the tests' S3 server. Tests only; standard library only.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// EnvStrict, when set, turns every "dependency missing" skip into a failure: `make test` sets it
// so that nothing is silently skipped.
const EnvStrict = "SENDENSE_TEST_STRICT"

// Strict reports whether missing dependencies fail tests instead of skipping them.
func Strict() bool { return os.Getenv(EnvStrict) != "" }

// Skip skips the test with a message that says how to get its dependency, or fails it under
// SENDENSE_TEST_STRICT.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (%s is set: a missing dependency fails)", msg, EnvStrict)
	}
	t.Skip(msg)
}

// Require calls Skip with the message unless ok.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		Skip(t, format, args...)
	}
}

// WaitFor polls cond every 10 ms until it holds, and fails the test naming what it waited for
// when it does not hold within d. Use it for conditions that are observed, never as a sleep.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// LogBuffer collects what a process or logger writes; safe for concurrent writers and readers.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
