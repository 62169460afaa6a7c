package directio

import (
	"os"
	"syscall"
	"unsafe"
)

func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}

func aligned(p []byte) bool { return uintptr(unsafe.Pointer(&p[0]))%Align == 0 }
