package repository

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sendense/sendense/shared/chunk"
)

// FuzzOpenSealed feeds arbitrary bytes, as a damaged or forged file of an encrypted repository
// would be, to the readers of sealed chunks and sealed objects. They must not panic, must refuse
// with their damage error, and may accept only the bytes the repository sealed itself: without
// the key nobody can forge a blob that opens.
func FuzzOpenSealed(f *testing.F) {
	r, _ := newEncryptedRepo(f, 64*kib, "fuzz")
	plain := bytes.Repeat([]byte("sealed "), 1000)
	d := chunk.Sum(plain)
	if _, err := r.PutChunk(f.Context(), d, frame(f, chunk.CodecZstd, plain)); err != nil {
		f.Fatal(err)
	}
	sealed, err := r.store.Get(f.Context(), r.keyOf(d), nil, int64(r.maxBlob))
	if err != nil {
		f.Fatal(err)
	}
	const objKey = "indexes/vm/disk-2000/bk-1.fidx"
	obj, err := r.sealObject(objKey, []byte("an index"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(obj)
	f.Add(sealed[:chunk.HeaderSize+chunk.SealOverhead])
	f.Add(frame(f, chunk.CodecRaw, plain))
	f.Add([]byte("SDSO\x01\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		got, err := r.openStored(d, in, nil)
		switch {
		case err == nil && (!bytes.Equal(b, sealed) || !bytes.Equal(got, plain)):
			t.Fatalf("a blob the repository did not seal opened as chunk %s", d)
		case err != nil && !errors.Is(err, ErrChunkDamaged):
			t.Fatalf("refused without ErrChunkDamaged: %v", err)
		}
		p, err := r.openObject(objKey, bytes.Clone(b))
		switch {
		case err == nil && (!bytes.Equal(b, obj) || string(p) != "an index"):
			t.Fatal("an object the repository did not seal opened")
		case err != nil && !errors.Is(err, errBadEnvelope):
			t.Fatalf("refused without errBadEnvelope: %v", err)
		}
		_, _ = parseSecret(b)
	})
}
