package disk

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestNBDKitOptionsVDDK(t *testing.T) {
	tr := Transport{Name: "nbd", NBD: NBDTransport{
		Plugin: "vddk", Dir: "/run/x", SourceURL: "https://vc.example.com:443/sdk", User: "backup@vsphere.local",
		PasswordFile: "/etc/sendense/vc.password", LibDir: "/opt/vddk", Transports: "nbdssl:nbd",
		Thumbprint: "b24f" + strings.Repeat("00", 18),
	}}
	d := Disk{ID: "disk-2000", FileName: "[ds1] web01/web01.vmdk", VMMoRef: "vm-12", SnapshotMoRef: "snapshot-7"}
	opts, err := tr.nbdkitOptions(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"libdir=/opt/vddk", "server=vc.example.com", "user=backup@vsphere.local",
		"password=+/etc/sendense/vc.password", "vm=moref=vm-12", "snapshot=snapshot-7",
		"file=[ds1] web01/web01.vmdk", "thumbprint=B2:4F" + strings.Repeat(":00", 18), "transports=nbdssl:nbd",
	}
	if opts.Plugin != "vddk" || opts.Dir != "/run/x" || !slices.Equal(opts.Args, want) {
		t.Fatalf("vddk options = %s %s %q\nwant args %q", opts.Plugin, opts.Dir, opts.Args, want)
	}
	if err := validateNBDKitOptions(opts); err != nil {
		t.Fatalf("nbdkit would refuse the vddk arguments: %v", err)
	}
	// A SHA-256 pin cannot be given to VDDK: the SHA-1 thumbprint of the certificate the agent's
	// connection verified against it is.
	tr.NBD.Thumbprint = strings.Repeat("AB:", 31) + "AB"
	tr.NBD.VerifiedSHA1 = "12:34" + strings.Repeat(":56", 18)
	if opts, err = tr.nbdkitOptions(t.Context(), d); err != nil || !slices.Contains(opts.Args, "thumbprint="+tr.NBD.VerifiedSHA1) {
		t.Fatalf("vddk options with a SHA-256 pin: %q, %v", opts.Args, err)
	}
}

func TestNBDKitOptionsCurl(t *testing.T) {
	const fileURL = "https://vc.example.com/folder/vm/disk-flat.vmdk?dcPath=DC0&dsName=ds1"
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(fileURL)
	jar.SetCookies(u, []*http.Cookie{{Name: "vmware_soap_session", Value: "abc"}})
	dsHTTP := func(_ context.Context, dc, ds, p string) (string, *http.Client, error) {
		if dc != "DC0" || ds != "ds1" || p != "vm/disk-flat.vmdk" {
			t.Errorf("datastore file asked for %s %s %s", dc, ds, p)
		}
		return fileURL, &http.Client{Jar: jar}, nil
	}
	d := Disk{ID: "disk-2000", DatacenterPath: "DC0", Datastore: "ds1", DataFile: "vm/disk-flat.vmdk"}
	for _, tt := range []struct {
		name    string
		nbd     NBDTransport
		want    []string
		wantErr string
	}{
		{"insecure", NBDTransport{Plugin: "curl", Insecure: true}, []string{"url=" + fileURL, "sslverify=false"}, ""},
		{"ca file", NBDTransport{Plugin: "curl", CAFile: "/etc/ca.pem"}, []string{"url=" + fileURL, "cainfo=/etc/ca.pem"}, ""},
		{"no verification configured", NBDTransport{Plugin: "curl"}, nil, "needs ca_file"},
		{"unknown plugin", NBDTransport{Plugin: "memory"}, nil, `unknown nbd plugin "memory"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := Transport{Name: "nbd", DatastoreHTTP: dsHTTP, NBD: tt.nbd}.nbdkitOptions(t.Context(), d)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || opts.Plugin != "curl" || !slices.Equal(opts.Args, tt.want) {
				t.Fatalf("curl options = %q, %v; want %q", opts.Args, err, tt.want)
			}
			// The cookie is the session: it goes through a file, never on nbdkit's command line,
			// and its key is one never logged.
			if len(opts.SecretFiles) != 1 || opts.SecretFiles["cookie"] != "vmware_soap_session=abc" {
				t.Fatalf("secret files = %q, want the session cookie", opts.SecretFiles)
			}
			if !isSecretKey("cookie", nil) {
				t.Fatal("the curl cookie would be logged")
			}
		})
	}
}

func TestVDDKThumbprint(t *testing.T) {
	sha1Colon := strings.TrimSuffix(strings.Repeat("AB:", 20), ":")
	for in, want := range map[string]string{
		strings.Repeat("ab", 20):                           sha1Colon,
		strings.ToLower(sha1Colon):                         sha1Colon,
		strings.ReplaceAll(sha1Colon, ":", " "):            sha1Colon,
		strings.TrimSuffix(strings.Repeat("AB:", 32), ":"): "", // SHA-256: left to vSphere
		"": "",
	} {
		if got := vddkThumbprint(in); got != want {
			t.Errorf("vddkThumbprint(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenSelectsTransport(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "vm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vm", "disk-flat.vmdk"), []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := Disk{ID: "disk-2000", Size: 10, Datastore: "ds1", DataFile: "vm/disk-flat.vmdk", BackingType: "flatVer2"}
	delta := Disk{ID: "disk-2001", Datastore: "ds1", BackingType: "seSparse"}

	r, err := Open(t.Context(), Transport{Name: "file", DatastorePaths: map[string]string{"ds1": dir}}, plain)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != 10 {
		t.Errorf("file transport size = %d, want 10", r.Size())
	}
	_ = r.Close()

	for _, tt := range []struct {
		name    string
		t       Transport
		d       Disk
		wantErr string
	}{
		{"file: datastore not mapped", Transport{Name: "file"}, plain, `no local path for datastore "ds1"`},
		{"file: not one plain file", Transport{Name: "file", DatastorePaths: map[string]string{"ds1": dir}}, delta, "disk disk-2001 is not one plain file (seSparse)"},
		{"https: not one plain file", Transport{}, delta, "is not one plain file"},
		{"https: no datastore access", Transport{Name: "https"}, plain, "no datastore HTTP access"},
		{"unknown", Transport{Name: "ftp"}, plain, `unknown transport "ftp"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Open(t.Context(), tt.t, tt.d)
			if err == nil {
				_ = r.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
