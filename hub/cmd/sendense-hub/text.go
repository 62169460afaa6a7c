package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable returns s with every rune a terminal would act on or hide (control characters,
// bidi controls, other non-printing runes, bytes that are not UTF-8) replaced by its Go escape
// (\x1b, \r, \u202e), so that a string an agent once sent cannot move the cursor, start an
// escape sequence, reorder the text or add a fake row. Printable text, non-ASCII letters
// included, is kept as it is.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// row writes one table row: the columns formatted with %v, made printable, separated by tabs.
func row(w io.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		io.WriteString(w, printable(fmt.Sprint(c)))
	}
	io.WriteString(w, "\n")
}
