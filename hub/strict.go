package hub

import (
	"errors"
	"fmt"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// ErrBadJSON is what DecodeStrict's errors wrap.
var ErrBadJSON = errors.New("bad JSON")

// DecodeStrict decodes one JSON object into v, a pointer to a struct, as
// every request body and client frame must be read: member names match the
// struct's json tags exactly (no case folding: "ITEM_ID" is not
// "item_id"), each member appears once, a member v does not declare is
// refused, and nothing may follow the object. The error names the member.
func DecodeStrict(data []byte, v any) error {
	return strictError(jsonv2.Unmarshal(data, v, jsonv2.RejectUnknownMembers(true)))
}

// decodeHead is DecodeStrict that leaves the members v does not declare to
// a later, strict decoding: a door reads a frame's type and id with it to
// choose the frame's handler. Names still match exactly, and a member that
// appears twice, declared or not, is refused.
func decodeHead(data []byte, v any) error {
	return strictError(jsonv2.Unmarshal(data, v))
}

// strictError describes a decoding error by the member it is about.
func strictError(err error) error {
	if err == nil {
		return nil
	}
	var se *jsonv2.SemanticError
	var syn *jsontext.SyntacticError
	switch {
	case errors.As(err, &se) && errors.Is(se.Err, jsonv2.ErrUnknownName):
		return fmt.Errorf("%w: unknown member %s", ErrBadJSON, memberName(string(se.JSONPointer)))
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return fmt.Errorf("%w: member %s appears more than once", ErrBadJSON, memberName(string(syn.JSONPointer)))
	case errors.As(err, &se) && se.JSONPointer != "":
		want := "another type"
		if se.GoType != nil {
			want = kindName(se.GoType.Kind().String())
		}
		return fmt.Errorf("%w: member %s must be %s", ErrBadJSON, memberName(string(se.JSONPointer)), want)
	case errors.As(err, &se):
		return fmt.Errorf("%w: the body must be a JSON object", ErrBadJSON)
	default:
		return fmt.Errorf("%w: not valid JSON", ErrBadJSON)
	}
}

// memberName turns a JSON pointer ("/item_id", "/data/x") into a quoted
// member path, clipped so a hostile name cannot flood an answer.
func memberName(ptr string) string {
	name := strings.TrimPrefix(ptr, "/")
	name = strings.NewReplacer("~1", "/", "~0", "~").Replace(name)
	return fmt.Sprintf("%q", Clip(name, 64))
}

func kindName(k string) string {
	switch {
	case k == "string":
		return "a string"
	case strings.HasPrefix(k, "int") || strings.HasPrefix(k, "uint") || strings.HasPrefix(k, "float"):
		return "a number"
	case k == "bool":
		return "true or false"
	case k == "slice" || k == "array":
		return "an array"
	case k == "map" || k == "struct":
		return "an object"
	default:
		return "another type"
	}
}
