package jsonscan

import "testing"

// TestSkipValue: each kind of value is stepped over exactly, strings with
// escaped quotes and nested containers included, in compact and spaced
// text.
func TestSkipValue(t *testing.T) {
	for _, tc := range []struct {
		text string
		want string // the value SkipValue steps over from 0
	}{
		{`"a\"b",1`, `"a\"b"`},
		{`"a\\",1`, `"a\\"`},
		{`{"a":[1,{"b":"}"}]},2`, `{"a":[1,{"b":"}"}]}`},
		{`[ "x" , "]" ] ,`, `[ "x" , "]" ]`},
		{`-12.5e3,`, `-12.5e3`},
		{`true}`, `true`},
		{`null ]`, `null`},
		{`17`, `17`},
	} {
		if got := tc.text[:SkipValue([]byte(tc.text), 0)]; got != tc.want {
			t.Errorf("SkipValue(%s) stepped over %s, want %s", tc.text, got, tc.want)
		}
	}
	if got := SkipSpace([]byte(" \t\r\n x"), 0); got != 5 {
		t.Errorf("SkipSpace = %d, want 5", got)
	}
	if got := SkipValue([]byte(`x`), 3); got != 1 {
		t.Errorf("SkipValue past the end = %d, want 1", got)
	}
}
