package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvS3Dir names the directory of the tests' S3 server (default $TMPDIR/sendense-s3): its data,
// identity and ports, kept across test runs like the private MariaDB's.
const EnvS3Dir = "SENDENSE_TEST_S3_DIR"

// S3Server is the S3 server that scripts/s3.sh runs (SeaweedFS), shared by every test of a test
// binary and across test binaries; tests keep apart by using prefixes of their own.
type S3Server struct {
	Dir       string // scripts/s3.sh's DIR
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Bucket    string
	root      string // the source tree's root, where scripts/ is
}

var (
	s3Once   sync.Once
	s3Shared *S3Server
	s3Err    error
)

// S3 returns the tests' S3 server, starting it on first use, or skips the test (fails it under
// SENDENSE_TEST_STRICT) when it cannot run here.
func S3(t testing.TB) *S3Server {
	t.Helper()
	s3Once.Do(func() { s3Shared, s3Err = startS3() })
	if s3Err != nil {
		Skip(t, "no S3 server: %v (scripts/tools.sh weed builds it; scripts/s3.sh start DIR runs it)", s3Err)
	}
	return s3Shared
}

// sourceRoot finds the source tree's root (the directory holding scripts/s3.sh) above the
// working directory of the test.
func sourceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "s3.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no scripts/s3.sh above the working directory")
		}
		dir = parent
	}
}

// PrivateS3 starts an S3 server of the test's own, in a fresh directory, and stops it when the
// test ends: for tests that kill or restart it, which would disturb the shared one.
func PrivateS3(t testing.TB) *S3Server {
	t.Helper()
	root, err := sourceRoot()
	if err == nil {
		_, err = os.Stat(filepath.Join(root, ".tools", "weed"))
	}
	if err != nil {
		Skip(t, "no S3 server: %v (scripts/tools.sh weed builds it)", err)
	}
	s := &S3Server{Dir: t.TempDir(), root: root}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command(filepath.Join(root, "scripts", "s3.sh"), "stop", s.Dir).Run() })
	return s
}

func startS3() (*S3Server, error) {
	root, err := sourceRoot()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, ".tools", "weed")); err != nil {
		return nil, fmt.Errorf("%s/.tools/weed is missing", root)
	}
	dir := os.Getenv(EnvS3Dir)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "sendense-s3")
	}
	s := &S3Server{Dir: dir, root: root}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start runs scripts/s3.sh start: it starts the server unless it runs (after Kill, or the first
// time) and waits until S3 answers. Endpoint, credentials and bucket stay the same.
func (s *S3Server) Start() error {
	cmd := exec.Command(filepath.Join(s.root, "scripts", "s3.sh"), "start", s.Dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("scripts/s3.sh start %s: %v: %s", s.Dir, err, strings.TrimSpace(stderr.String()))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "S3_ENDPOINT":
			s.Endpoint = v
		case "S3_ACCESS_KEY":
			s.AccessKey = v
		case "S3_SECRET_KEY":
			s.SecretKey = v
		case "S3_BUCKET":
			s.Bucket = v
		}
	}
	if s.Endpoint == "" || s.AccessKey == "" || s.SecretKey == "" || s.Bucket == "" {
		return fmt.Errorf("scripts/s3.sh start printed no complete S3_* lines")
	}
	return nil
}

// Kill kills the server with SIGKILL, as a crash would, and waits until it is gone. Start
// brings it back.
func (s *S3Server) Kill(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, "weed.pid"))
	if err != nil {
		t.Fatalf("kill the S3 server: %v", err)
	}
	pid := strings.TrimSpace(string(b))
	if err := exec.Command("kill", "-KILL", pid).Run(); err != nil {
		t.Fatalf("kill -KILL %s: %v", pid, err)
	}
	WaitFor(t, 10*time.Second, "the killed S3 server to exit", func() bool {
		_, err := os.Stat("/proc/" + pid)
		return err != nil
	})
}

// CredentialsFile writes the server's credentials as --s3-credentials-file reads them (access
// key id, then secret, one a line) into a file 0600 of dir and returns its path.
func (s *S3Server) CredentialsFile(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "s3-credentials")
	if err := os.WriteFile(p, []byte(s.AccessKey+"\n"+s.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
