package repository_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/repository"
	"github.com/sendense/sendense/hub/internal/repository/store"
	"github.com/sendense/sendense/hub/internal/repository/store/s3"
	"github.com/sendense/sendense/hub/internal/repository/store/s3/s3test"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
)

// An S3 repository is created, recorded with its settings and the path of its credentials file
// (never the secret), and opened again from the catalog by another registry. A credentials file
// missing or wrong fails the open with an error naming the repository, and neither the error nor
// the log holds the secret.
func TestRegistryS3(t *testing.T) {
	cfg := s3test.Config(t)
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		g := repository.NewRegistry(c, log, nil)
		t.Cleanup(func() { _ = g.Close() })
		creds := filepath.Join(t.TempDir(), "creds")
		if err := os.WriteFile(creds, []byte(cfg.AccessKey+"\n"+cfg.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		set := api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3Prefix: cfg.Prefix + "/" + filepath.Base(t.Name()), S3CredentialsFile: creds}

		for _, tc := range []struct {
			field string
			set   api.S3Settings
		}{
			{"s3_bucket", api.S3Settings{S3Endpoint: cfg.Endpoint, S3CredentialsFile: creds}},
			{"s3_credentials_file", api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket}},
			{"s3_credentials_file", api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3CredentialsFile: filepath.Join(t.TempDir(), "none")}},
			{"s3_endpoint", api.S3Settings{S3Endpoint: "ftp://x", S3Bucket: cfg.Bucket, S3CredentialsFile: creds}},
			{"s3_endpoint", api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: "no-such-bucket-here", S3CredentialsFile: creds}},
		} {
			_, err := g.CreateS3(ctx, "bad", tc.set, 0, "")
			var fe *api.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("CreateS3(%+v): %v, want a field error on %s", tc.set, err, tc.field)
			}
		}

		rec, err := g.CreateS3(ctx, "offsite", set, 256<<10, "")
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind != api.RepositoryS3 || rec.ChunkSize != 256<<10 || rec.S3CredentialsFile != creds || rec.S3Bucket != cfg.Bucket ||
			!strings.Contains(rec.Path, cfg.Bucket+"/"+set.S3Prefix) {
			t.Fatalf("created %+v", rec)
		}
		r, err := g.Open(ctx, rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		plain := bytes.Repeat([]byte("sendense"), 8<<10)
		d := chunk.Sum(plain)
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		if stored, err := r.PutChunk(ctx, d, blob); err != nil || !stored {
			t.Fatalf("PutChunk into S3: %v, %v", stored, err)
		}

		// Another hub process opens it from the catalog, reading the credentials file.
		other := repository.NewRegistry(c, log, nil)
		t.Cleanup(func() { _ = other.Close() })
		r2, err := other.Open(ctx, rec.ID)
		if err != nil {
			t.Fatalf("another registry's Open: %v", err)
		}
		if ok, err := r2.HasChunk(ctx, d); err != nil || !ok {
			t.Fatalf("the chunk put through one registry is not seen through another: %v, %v", ok, err)
		}
		// The repository in the bucket is recorded already: not a second time, under another name.
		if _, err := other.CreateS3(ctx, "offsite-again", set, 0, ""); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("recording the same S3 repository twice: %v, want ErrConflict", err)
		}

		// Credentials file wrong, then missing: the open fails naming the repository.
		if err := os.WriteFile(creds, []byte(cfg.AccessKey+"\nwrong-"+cfg.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		third := repository.NewRegistry(c, log, nil)
		t.Cleanup(func() { _ = third.Close() })
		if _, err := third.Open(ctx, rec.ID); err == nil || !strings.Contains(err.Error(), `repository "offsite"`) || strings.Contains(err.Error(), cfg.SecretKey) {
			t.Fatalf("Open with a wrong secret: %v", err)
		}
		if err := os.Remove(creds); err != nil {
			t.Fatal(err)
		}
		if _, err := third.Open(ctx, rec.ID); err == nil || !strings.Contains(err.Error(), `repository "offsite"`) || !strings.Contains(err.Error(), creds) {
			t.Fatalf("Open without the credentials file: %v", err)
		}
		if strings.Contains(logs.String(), cfg.SecretKey) {
			t.Fatal("the secret was logged")
		}
		// The catalog holds the path of the credentials file, not the secret.
		rs, err := c.Repositories(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if strings.Contains(r.Path+r.S3Endpoint+r.S3Bucket+r.S3Prefix+r.S3Region+r.S3CAFile+r.S3CredentialsFile, cfg.SecretKey) {
				t.Fatalf("the catalog holds the secret: %+v", r)
			}
		}
	})
}

// An encrypted repository in a bucket: what is stored there reveals no plaintext, another
// registry opens it with the recorded password file, a wrong password is refused naming the
// repository, and its key slots are managed like a directory's.
func TestRegistryS3Encrypted(t *testing.T) {
	cfg := s3test.Config(t)
	catalogtest.ForEachDialect(t, func(t *testing.T, c *catalog.Catalog) {
		ctx := t.Context()
		log := slog.New(slog.DiscardHandler)
		dir := t.TempDir()
		creds, pw := filepath.Join(dir, "creds"), filepath.Join(dir, "pw")
		if err := os.WriteFile(creds, []byte(cfg.AccessKey+"\n"+cfg.SecretKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pw, []byte("correct horse battery staple\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		prefix := cfg.Prefix + "/" + filepath.Base(t.Name())
		set := api.S3Settings{S3Endpoint: cfg.Endpoint, S3Bucket: cfg.Bucket, S3Prefix: prefix, S3CredentialsFile: creds}
		g := repository.NewRegistry(c, log, nil)
		g.SetKDFCost(repository.KDF{Name: "argon2id", Time: 1, MemoryKiB: 64, Threads: 1})
		t.Cleanup(func() { _ = g.Close() })
		rec, err := g.CreateS3(ctx, "vault", set, 0, pw)
		if err != nil {
			t.Fatal(err)
		}
		if rec.PasswordFile != pw {
			t.Fatalf("recorded password file %q, want %q", rec.PasswordFile, pw)
		}
		r, err := g.Open(ctx, rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Encrypted() {
			t.Fatal("the S3 repository created with a password file is not encrypted")
		}
		marker := []byte("PLAINTEXT-MARKER-IN-AN-S3-REPOSITORY ")
		plain := bytes.Repeat(marker, 4<<10)
		d := chunk.Sum(plain)
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		if stored, err := r.PutChunk(ctx, d, blob); err != nil || !stored {
			t.Fatalf("PutChunk: %v, %v", stored, err)
		}

		// Every object under the prefix, read raw from the bucket: no plaintext, no digest.
		st, err := s3.Open(ctx, s3.Config{Endpoint: cfg.Endpoint, Bucket: cfg.Bucket, Prefix: prefix, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		objects := 0
		err = st.List(ctx, "", func(info store.Info) error {
			objects++
			data, err := st.Get(ctx, info.Key, nil, 0)
			if err != nil {
				return err
			}
			if bytes.Contains(data, marker[:20]) || strings.Contains(info.Key, d.String()) || bytes.Contains(data, []byte("correct horse")) {
				t.Errorf("object %s reveals the plaintext, its digest or the password", info.Key)
			}
			return nil
		})
		if err != nil || objects < 3 {
			t.Fatalf("listed %d objects: %v", objects, err)
		}

		// Another hub opens it with the recorded password file and reads the chunk back.
		other := repository.NewRegistry(c, log, nil)
		t.Cleanup(func() { _ = other.Close() })
		r2, err := other.Open(ctx, rec.ID)
		if err != nil {
			t.Fatalf("another registry's Open: %v", err)
		}
		got, err := r2.ReadChunk(ctx, d, nil)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("ReadChunk through another registry: %v (equal %v)", err, bytes.Equal(got, plain))
		}
		// Key slots of an S3 repository are managed as a directory's.
		_, rk, err := other.OpenKeys(ctx, "vault", "")
		if err != nil {
			t.Fatalf("OpenKeys: %v", err)
		}
		slots, err := rk.KeySlots(ctx)
		_ = rk.Close()
		if err != nil || len(slots) != 1 {
			t.Fatalf("key slots: %d, %v", len(slots), err)
		}
		// A wrong password is refused, naming the repository.
		if err := os.WriteFile(pw, []byte("wrong password entirely\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		third := repository.NewRegistry(c, log, nil)
		t.Cleanup(func() { _ = third.Close() })
		if _, err := third.Open(ctx, rec.ID); err == nil || !strings.Contains(err.Error(), `repository "vault"`) {
			t.Fatalf("Open with a wrong password: %v", err)
		}
	})
}
