package api

import "testing"

func TestAttachment(t *testing.T) {
	for name, want := range map[string]string{
		"hosts":              "attachment; filename*=UTF-8''hosts",
		"a b;c\"d\r\ne.tar":  "attachment; filename*=UTF-8''a%20b%3Bc%22d%0D%0Ae.tar",
		"x:y=z@w%v'\\/":      "attachment; filename*=UTF-8''x%3Ay%3Dz%40w%25v%27%5C%2F",
		"été~!#$&+-.^_`|.gz": "attachment; filename*=UTF-8''%C3%A9t%C3%A9~!#$&+-.^_`|.gz",
	} {
		if got := Attachment(name); got != want {
			t.Errorf("Attachment(%q) = %s, want %s", name, got, want)
		}
	}
}
