package api_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/shared/api"
)

// POST /repositories creates an S3 repository from the same settings as the command line's
// flags; bad settings answer 400 naming the field, and no answer carries the secret.
func TestCreateS3Repository(t *testing.T) {
	cfg := s3test.Config(t)
	forEachHub(t, func(t *testing.T, h *testHub) {
		admin := h.apiToken(api.RoleAdmin)
		c := h.client(nil)
		creds := filepath.Join(t.TempDir(), "creds")
		if err := os.WriteFile(creds, []byte(cfg.AccessKey+"\n"+cfg.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		good := api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3Prefix: cfg.Prefix + "/" + filepath.Base(t.Name()), S3CredentialsFile: creds}
		for _, tc := range []struct {
			field string
			req   api.CreateRepositoryRequest
		}{
			{"path", api.CreateRepositoryRequest{Name: "x", Path: "/tmp/x", S3Settings: good}},
			{"s3_credentials_file", api.CreateRepositoryRequest{Name: "x", S3Settings: api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3CredentialsFile: "creds"}}},
			{"s3_credentials_file", api.CreateRepositoryRequest{Name: "x", S3Settings: api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3CredentialsFile: "/nonexistent/creds"}}},
			{"s3_endpoint", api.CreateRepositoryRequest{Name: "x", S3Settings: api.S3Settings{S3Bucket: cfg.Bucket, S3CredentialsFile: creds}}},
			{"s3_bucket", api.CreateRepositoryRequest{Name: "x", S3Settings: api.S3Settings{S3Endpoint: cfg.Endpoint, S3CredentialsFile: creds}}},
			{"s3_endpoint", api.CreateRepositoryRequest{Name: "x", S3Settings: api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: "missing-bucket", S3CredentialsFile: creds}}},
		} {
			code, e := h.call(c, http.MethodPost, api.PathRepositories, admin, tc.req, nil)
			if code != http.StatusBadRequest || e.Field != tc.field {
				t.Errorf("create %+v: %d %+v, want 400 on %s", tc.req, code, e, tc.field)
			}
			if strings.Contains(e.Error, cfg.SecretKey) {
				t.Errorf("an error names the secret: %s", e.Error)
			}
		}
		var r api.Repository
		if code, e := h.call(c, http.MethodPost, api.PathRepositories, admin, api.CreateRepositoryRequest{Name: "offsite", ChunkSize: 1 << 20, S3Settings: good}, &r); code != http.StatusCreated {
			t.Fatalf("create S3 repository: %d %+v", code, e)
		}
		if r.Kind != api.RepositoryS3 || r.S3Bucket != cfg.Bucket || r.S3Prefix != good.S3Prefix || r.S3CredentialsFile != creds || r.ChunkSize != 1<<20 {
			t.Fatalf("created %+v", r)
		}
		var list api.RepositoryList
		if code, _ := h.call(c, http.MethodGet, api.PathRepositories, admin, nil, &list); code != http.StatusOK || len(list.Repositories) != 2 {
			t.Fatalf("list: %d %+v", code, list)
		}
		if strings.Contains(h.Logs.String(), cfg.SecretKey) {
			t.Fatal("the hub logged the secret")
		}
	})
}

// POST /repositories with a local path that cannot hold a repository, or a directory holding one
// of another chunk size, answers 400 naming the field, and records nothing.
func TestCreateLocalRepositoryRefusesBadPaths(t *testing.T) {
	forEachHub(t, func(t *testing.T, h *testHub) {
		admin := h.apiToken(api.RoleAdmin)
		c := h.client(nil)
		dir := t.TempDir()
		file := filepath.Join(dir, "a-file")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		var first api.Repository
		if code, e := h.call(c, http.MethodPost, api.PathRepositories, admin, api.CreateRepositoryRequest{Name: "big", Path: filepath.Join(dir, "big")}, &first); code != http.StatusCreated {
			t.Fatalf("create: %d %+v", code, e)
		}
		var before api.RepositoryList
		h.call(c, http.MethodGet, api.PathRepositories, admin, nil, &before)
		for _, tc := range []struct {
			field string
			req   api.CreateRepositoryRequest
		}{
			{"path", api.CreateRepositoryRequest{Name: "r1", Path: file}},
			{"path", api.CreateRepositoryRequest{Name: "r2", Path: filepath.Join(file, "sub")}},
			{"path", api.CreateRepositoryRequest{Name: "r3", Path: "/proc/sendense-nope"}},
			{"chunk_size", api.CreateRepositoryRequest{Name: "r4", Path: filepath.Join(dir, "big"), ChunkSize: 1 << 20}},
		} {
			code, e := h.call(c, http.MethodPost, api.PathRepositories, admin, tc.req, nil)
			if code != http.StatusBadRequest || e.Field != tc.field || e.Error == "" {
				t.Errorf("create %+v: %d %+v, want 400 on %s", tc.req, code, e, tc.field)
			}
		}
		var after api.RepositoryList
		h.call(c, http.MethodGet, api.PathRepositories, admin, nil, &after)
		if len(after.Repositories) != len(before.Repositories) {
			t.Fatalf("refused creates recorded repositories: %d before, %d after", len(before.Repositories), len(after.Repositories))
		}
	})
}
