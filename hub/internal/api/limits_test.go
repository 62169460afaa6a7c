package api_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	hubapi "github.com/sendense/sendense/hub/internal/api"
	"github.com/sendense/sendense/hub/internal/catalog"
	"github.com/sendense/sendense/hub/internal/catalog/catalogtest"
	"github.com/sendense/sendense/hub/internal/ingest"
	"github.com/sendense/sendense/shared/api"
	"github.com/sendense/sendense/shared/chunk"
	"github.com/sendense/sendense/shared/testenv"
)

// The limits are HTTP behaviour, the same over either catalog: the tests run on SQLite only.
func sqliteHub(t *testing.T, limits hubapi.Limits) *testHub {
	t.Helper()
	return sqliteHubWith(t, hubOptions{limits: limits})
}

func sqliteHubWith(t *testing.T, o hubOptions) *testHub {
	t.Helper()
	c := catalogtest.Open(t, catalog.DriverSQLite)
	if _, err := c.MigrateUp(t.Context(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return newTestHub(t, c, o)
}

// drip is a request whose body a client sends one byte at a time, on a connection of its own.
type drip struct {
	t       *testing.T
	br      *bufio.Reader
	conn    *tls.Conn
	started time.Time
	first   *http.Response // the final answer, when it came before the body was read
}

// startDrip sends the headers of a request announcing size body bytes with Expect:
// 100-continue, waits for the hub's 100 Continue (a handler is reading the body), then sends a
// byte every interval until a write fails. A hub that answers without reading the body (a
// refusal) leaves the answer in first.
func (h *testHub) startDrip(cert *tls.Certificate, method, path string, size int, every time.Duration) *drip {
	h.t.Helper()
	cfg := &tls.Config{RootCAs: h.CA.Pool(), MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(h.URL, "https://"), cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", method, path, size); err != nil {
		h.t.Fatal(err)
	}
	d := &drip{t: h.t, br: bufio.NewReader(conn), conn: conn}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(d.br, nil)
	if err != nil {
		h.t.Fatalf("%s %s: no 100 Continue: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusContinue {
		d.first = resp
		return d
	}
	d.started = time.Now()
	go func() {
		b := []byte("{")
		for range size {
			if _, err := conn.Write(b); err != nil {
				return
			}
			b[0] = ' '
			time.Sleep(every)
		}
	}()
	return d
}

// closed waits up to 10s for the final answer and the end of the connection; it returns the
// answer's status and how long after the first byte of the body the connection ended.
func (d *drip) closed() (int, time.Duration) {
	d.t.Helper()
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(d.br, nil)
	if err != nil {
		d.t.Fatalf("no answer to a dripped body within 10s: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if _, err := d.br.ReadByte(); err != io.EOF {
		d.t.Fatalf("the connection stayed open after the answer %d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, time.Since(d.started)
}

// An anonymous client dripping a body into enrollment is cut at the body deadline and its
// connection closed, long before the drip would end; an ordinary enrollment still works.
func TestEnrollBodyDripIsCut(t *testing.T) {
	h := sqliteHub(t, hubapi.Limits{BodyTimeout: time.Second})
	d := h.startDrip(nil, http.MethodPost, api.PathEnroll, 1000, 200*time.Millisecond) // 200s of drip
	code, took := d.closed()
	if code != http.StatusRequestTimeout {
		t.Errorf("a dripped enrollment was answered %d, want 408", code)
	}
	if took > 5*time.Second {
		t.Errorf("the connection was closed %s after the body began, want about 1s", took)
	}
	if got := metricValue(t, h.Reg, "sendense_hub_http_slow_clients_total", "reason", "body_timeout"); got != 1 {
		t.Errorf("slow clients (body_timeout) = %v, want 1", got)
	}
	if !strings.Contains(h.Logs.String(), "request body too slow") {
		t.Error("the cut was not logged")
	}
	h.enrollAgent("a1")
}

// A chunk uploaded below the minimum rate is cut; one sent in pieces over longer than the
// grace, at a healthy rate, is stored.
func TestChunkUploadMinimumRate(t *testing.T) {
	h := sqliteHub(t, hubapi.Limits{BodyTimeout: time.Second, UploadMinRate: 2 << 10})
	img := randomImage(t, 2*testChunk)
	a, _, s := h.fullSession(img)
	plain := img[:testChunk]
	digest := chunk.Sum(plain).String()
	blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
	if err != nil {
		t.Fatal(err)
	}

	// 5 bytes/s against 2 KiB/s: cut about a second in, where the drip would take hours.
	d := h.startDrip(a.cert, http.MethodPut, api.Path(api.PathAgentChunk, s.ID, digest)+"?slots=0", len(blob), 200*time.Millisecond)
	if d.first != nil {
		t.Fatalf("the dripped upload was refused before its body: %d", d.first.StatusCode)
	}
	code, took := d.closed()
	if code != http.StatusRequestTimeout {
		t.Errorf("a dripped chunk was answered %d, want 408", code)
	}
	if took > 5*time.Second {
		t.Errorf("the connection was closed %s after the body began, want about 1s", took)
	}
	if got := metricValue(t, h.Reg, "sendense_hub_http_slow_clients_total", "reason", "upload_min_rate"); got != 1 {
		t.Errorf("slow clients (upload_min_rate) = %v, want 1", got)
	}

	// 8 KiB every 250ms (32 KiB/s) takes 2s: past the 1s grace, within the rate.
	req, _ := http.NewRequest(http.MethodPut, h.URL+api.Path(api.PathAgentChunk, s.ID, digest)+"?slots=0", &pacedReader{b: blob, piece: 8 << 10, every: 250 * time.Millisecond})
	req.ContentLength = int64(len(blob))
	start := time.Now()
	resp, err := a.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a chunk sent at a healthy rate over %s: %d, want 201", time.Since(start), resp.StatusCode)
	}
	if got := metricValue(t, h.Reg, "sendense_hub_http_slow_clients_total", "reason", "upload_min_rate"); got != 1 {
		t.Errorf("slow clients (upload_min_rate) = %v after a healthy upload, want still 1", got)
	}
}

// pacedReader yields b in pieces, sleeping before each piece but the first.
type pacedReader struct {
	b     []byte
	off   int
	piece int
	every time.Duration
}

func (r *pacedReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	if r.off > 0 {
		time.Sleep(r.every)
	}
	n := copy(p[:min(len(p), r.piece)], r.b[r.off:])
	r.off += n
	return n, nil
}

// Long polls and image downloads have no request body: the deadlines leave them alone, however
// long they take.
func TestDeadlinesSpareLongPollsAndDownloads(t *testing.T) {
	h := sqliteHub(t, hubapi.Limits{BodyTimeout: time.Second, UploadMinRate: 2 << 10})
	a := h.newAgent("a1")
	operator, viewer := h.apiToken(api.RoleOperator), h.apiToken(api.RoleViewer)

	start := time.Now()
	if j := a.nextJob("3s"); j != nil {
		t.Fatalf("long poll returned a job: %+v", j)
	}
	if took := time.Since(start); took < 3*time.Second {
		t.Fatalf("the long poll returned after %s, before its 3s wait", took)
	}

	img := randomImage(t, 16*testChunk)
	id := h.backupImage(a, operator, img)
	req, _ := http.NewRequest(http.MethodGet, h.URL+api.PathBackups+"/"+id+"/disks/disk-2000/image", nil)
	req.Header.Set("Authorization", "Bearer "+viewer)
	resp, err := h.client(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, testChunk)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // a reader slower than any deadline
	rest, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(append(head, rest...), img) {
		t.Fatalf("image read slowly: status %d, err %v, equal %v", resp.StatusCode, err, bytes.Equal(append(head, rest...), img))
	}
	for _, reason := range []string{"body_timeout", "upload_min_rate"} {
		if got := metricValue(t, h.Reg, "sendense_hub_http_slow_clients_total", "reason", reason); got != 0 {
			t.Errorf("slow clients (%s) = %v, want 0", reason, got)
		}
	}
}

// Requests without credentials in flight are capped per address: over the cap the answer is 429
// with the JSON error body, while an enrolled agent is still served; capacity returns when the
// held requests end.
func TestUnauthenticatedRequestsCappedPerAddress(t *testing.T) {
	h := sqliteHub(t, hubapi.Limits{BodyTimeout: 3 * time.Second, UnauthenticatedPerAddress: 2})
	_, cert := h.enrollAgent("a1")
	drips := []*drip{
		h.startDrip(nil, http.MethodPost, api.PathEnroll, 1000, 200*time.Millisecond),
		h.startDrip(nil, http.MethodPost, api.PathEnroll, 1000, 200*time.Millisecond),
	}
	for _, d := range drips {
		if d.first != nil {
			t.Fatalf("a drip within the cap was refused: %d", d.first.StatusCode)
		}
	}
	code, e := h.call(h.client(nil), http.MethodGet, api.PathHealth, "", nil, nil)
	if code != http.StatusTooManyRequests || e.Code != api.CodeTooManyRequests {
		t.Fatalf("a third anonymous request: %d %+v, want 429 %s", code, e, api.CodeTooManyRequests)
	}
	if code, e := h.call(h.client(cert), http.MethodPost, api.PathAgentHeartbeat, "", api.HeartbeatRequest{Hostname: "a1"}, nil); code != http.StatusOK {
		t.Fatalf("an enrolled agent was refused while anonymous requests were capped: %d %+v", code, e)
	}
	for _, d := range drips {
		d.closed()
	}
	if code, e := h.call(h.client(nil), http.MethodGet, api.PathHealth, "", nil, nil); code != http.StatusOK {
		t.Fatalf("an anonymous request after the held ones ended: %d %+v", code, e)
	}
}

// The bodies of chunk uploads in flight share one memory budget, whoever sends them. An upload
// that finds it spent waits without reading its body — its body deadline held, for the hub and
// not the agent is slow — and is stored once memory is free; one that waits longer than the
// upload wait is answered 429 with Retry-After and the JSON error body, and changes nothing.
func TestChunkUploadsShareTheUploadMemory(t *testing.T) {
	// A budget below one blob: one upload at a time.
	h := sqliteHubWith(t, hubOptions{
		limits: hubapi.Limits{BodyTimeout: time.Second, UploadMinRate: 1},
		ingest: ingest.Options{UploadMemory: 1, UploadMemoryWait: 6 * time.Second},
	})
	img := randomImage(t, 5*testChunk) // slot 1 is zero
	a, _, s := h.fullSession(img)
	blobOf := func(slot int) (string, []byte) {
		plain := img[slot*testChunk : (slot+1)*testChunk]
		blob, err := chunk.AppendBlob(nil, chunk.CodecRaw, len(plain), plain)
		if err != nil {
			t.Fatal(err)
		}
		return h.URL + api.Path(api.PathAgentChunk, s.ID, chunk.Sum(plain).String()) + fmt.Sprintf("?slots=%d", slot), blob
	}
	type answer struct {
		code  int
		retry string
		body  string
	}
	upload := func(url string, body io.Reader, size int) chan answer {
		done := make(chan answer, 1)
		req, _ := http.NewRequest(http.MethodPut, url, body)
		req.ContentLength = int64(size)
		go func() {
			resp, err := a.c.Do(req)
			if err != nil {
				done <- answer{body: err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			done <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
		}()
		return done
	}
	// start begins the upload of a slot with the first 100 bytes of its body; the function it
	// returns sends the rest.
	start := func(slot int) (chan answer, func()) {
		url, blob := blobOf(slot)
		pr, pw := io.Pipe()
		done := upload(url, pr, len(blob))
		if _, err := pw.Write(blob[:100]); err != nil {
			t.Fatal(err)
		}
		return done, func() { go func() { _, _ = pw.Write(blob[100:]); _ = pw.Close() }() }
	}
	// hold starts an upload that takes the memory; the function it returns ends it stored.
	hold := func(slot int) func() {
		done, rest := start(slot)
		testenv.WaitFor(t, 20*time.Second, "the held upload to take the upload memory", func() bool {
			return metricValue(t, h.Reg, "sendense_hub_chunk_upload_memory_bytes", "", "") == 1
		})
		return func() {
			rest()
			if got := <-done; got.code != http.StatusCreated {
				t.Fatalf("the held upload of slot %d: %+v, want 201", slot, got)
			}
		}
	}

	// An upload waits for the memory longer than its body deadline, and is stored once it is free.
	finish := hold(0)
	waiting, rest := start(2)
	testenv.WaitFor(t, 20*time.Second, "the second upload to wait for memory", func() bool {
		return metricValue(t, h.Reg, "sendense_hub_chunk_upload_memory_waits_total", "", "") == 1
	})
	time.Sleep(2 * time.Second) // past the 1s body deadline, well within the 6s wait
	select {
	case got := <-waiting:
		t.Fatalf("the waiting upload ended while the memory was held: %+v", got)
	default:
	}
	finish()
	rest()
	if got := <-waiting; got.code != http.StatusCreated {
		t.Fatalf("the upload that waited for memory: %+v, want 201", got)
	}

	// One that waits longer than the upload wait is refused, and stored when sent again.
	finish = hold(3)
	url, blob := blobOf(4)
	began := time.Now()
	got := <-upload(url, bytes.NewReader(blob), len(blob))
	if got.code != http.StatusTooManyRequests || got.retry == "" || !strings.Contains(got.body, "memory for chunk uploads") {
		t.Fatalf("an upload that found no memory for 6s: %+v after %s, want 429 with Retry-After naming the memory", got, time.Since(began))
	}
	if n := metricValue(t, h.Reg, "sendense_hub_chunk_uploads_refused_memory_total", "", ""); n != 1 {
		t.Errorf("uploads refused for memory = %v, want 1", n)
	}
	finish()
	if code := a.putBlob(s.ID, chunk.Sum(img[4*testChunk:]).String(), blob, 4); code != http.StatusCreated {
		t.Fatalf("the refused upload sent again: %d, want 201 (it stored nothing)", code)
	}
	if n := metricValue(t, h.Reg, "sendense_hub_chunk_upload_memory_bytes", "", ""); n != 0 {
		t.Errorf("upload memory in use after every upload ended = %v, want 0", n)
	}
	for _, reason := range []string{"body_timeout", "upload_min_rate"} {
		if n := metricValue(t, h.Reg, "sendense_hub_http_slow_clients_total", "reason", reason); n != 0 {
			t.Errorf("slow clients (%s) = %v, want 0: a wait for memory is not the client's", reason, n)
		}
	}
}
