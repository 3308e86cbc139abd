// Decoding a record value strictly, and the canonical msgpack encoding that an action's HMAC covers.
//
// The rules are written down in schemas/examples/signing/README.md; this file is a direct reading of
// them. A decoded value is one of: nil, bool, uint64 (every integer >= 0), int64 (every integer < 0),
// float64 (float32 widened), string (valid UTF-8), []byte (msgpack bin), []any, map[string]any.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// maxDepth bounds nesting, so that no record can exhaust the stack.
const maxDepth = 32

// decodeMessage reads exactly one msgpack map from raw, with nothing after it.
func decodeMessage(raw []byte) (map[string]any, error) {
	r := bytes.NewReader(raw)
	v, err := decodeValue(msgpack.NewDecoder(r), 0)
	if err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("not one msgpack value: %d bytes after it", r.Len())
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a msgpack map but %s", typeName(v))
	}
	return m, nil
}

func decodeValue(d *msgpack.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
	}
	c, err := d.PeekCode()
	if err != nil {
		return nil, fmt.Errorf("truncated msgpack: %w", err)
	}
	switch {
	case c == msgpcode.Nil:
		return nil, d.DecodeNil()
	case c == msgpcode.False || c == msgpcode.True:
		return d.DecodeBool()
	case msgpcode.IsFixedNum(c) && c <= msgpcode.PosFixedNumHigh,
		c == msgpcode.Uint8, c == msgpcode.Uint16, c == msgpcode.Uint32, c == msgpcode.Uint64:
		return d.DecodeUint64()
	case msgpcode.IsFixedNum(c),
		c == msgpcode.Int8, c == msgpcode.Int16, c == msgpcode.Int32, c == msgpcode.Int64:
		n, err := d.DecodeInt64()
		if err == nil && n >= 0 { // a signed format holding a non-negative number
			return uint64(n), nil
		}
		return n, err
	case c == msgpcode.Float:
		f, err := d.DecodeFloat32()
		return float64(f), err
	case c == msgpcode.Double:
		return d.DecodeFloat64()
	case msgpcode.IsString(c):
		s, err := d.DecodeString()
		if err == nil && !utf8.ValidString(s) {
			return nil, errors.New("a string is not valid UTF-8")
		}
		return s, err
	case msgpcode.IsBin(c):
		b, err := d.DecodeBytes()
		if b == nil {
			b = []byte{}
		}
		return b, err
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out := []any{} // never sized by n: the header may claim more than the record holds
		for i := 0; i < n; i++ {
			v, err := decodeValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		out := map[string]any{}
		for i := 0; i < n; i++ {
			k, err := decodeValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			key, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("a map key is %s, not a string", typeName(k))
			}
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("duplicate key %q: a consumer could read either value", clip(key))
			}
			v, err := decodeValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			out[key] = v
		}
		return out, nil
	case msgpcode.IsExt(c):
		return nil, errors.New("a msgpack extension value: no action holds one")
	}
	return nil, fmt.Errorf("msgpack code 0x%02x is not valid", c)
}

// canonical is the canonical msgpack encoding of v.
func canonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := encodeCanonical(msgpack.NewEncoder(&buf), v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encodeCanonical(e *msgpack.Encoder, v any) error {
	switch x := v.(type) {
	case nil:
		return e.EncodeNil()
	case bool:
		return e.EncodeBool(x)
	case uint64:
		return e.EncodeUint(x) // shortest unsigned form
	case int64:
		return e.EncodeInt(x) // shortest form; a negative number always takes a signed one
	case float64:
		return e.EncodeFloat64(x) // always 0xcb
	case string:
		return e.EncodeString(x) // fixstr, str8, str16 or str32: the shortest
	case []byte:
		return e.EncodeBytes(x) // bin8, bin16 or bin32
	case []any:
		if err := e.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, item := range x {
			if err := encodeCanonical(e, item); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // byte order of UTF-8 = code point order
		if err := e.EncodeMapLen(len(keys)); err != nil {
			return err
		}
		for _, k := range keys {
			if err := e.EncodeString(k); err != nil {
				return err
			}
			if err := encodeCanonical(e, x[k]); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("cannot encode %T canonically", v)
}

// signingPayload is what the HMAC covers: every top-level field except "signature", canonically encoded.
func signingPayload(m map[string]any) ([]byte, error) {
	rest := make(map[string]any, len(m))
	for k, v := range m {
		if k != "signature" {
			rest[k] = v
		}
	}
	return canonical(rest)
}

func mac(key, payload []byte) string {
	h := hmac.New(sha256.New, key)
	h.Write(payload)
	return hex.EncodeToString(h.Sum(nil))
}

func isLowerHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// checkSignature returns the key that signed m, or why none did. Every key is tried, each comparison in
// constant time, so the time taken does not depend on the signature.
func checkSignature(m map[string]any, keys []Key) (*Key, error) {
	raw, present := m["signature"]
	if !present || raw == nil {
		return nil, errors.New("no signature field")
	}
	sig, ok := raw.(string)
	if !ok || !isLowerHex64(sig) {
		return nil, errors.New("signature is not 64 lowercase hex characters")
	}
	payload, err := signingPayload(m)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the action canonically: %w", err)
	}
	var matched *Key
	for i := range keys {
		if hmac.Equal([]byte(mac(keys[i].Secret, payload)), []byte(sig)) && matched == nil {
			matched = &keys[i]
		}
	}
	if matched == nil {
		which := "the key"
		if len(keys) > 1 {
			which = fmt.Sprintf("any of the %d keys", len(keys))
		}
		return nil, fmt.Errorf("signature does not match %s: wrong key, or the action was altered", which)
	}
	return matched, nil
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case bool:
		return "a bool"
	case uint64, int64:
		return "an integer"
	case float64:
		return "a float"
	case string:
		return "a string"
	case []byte:
		return "binary"
	case []any:
		return "an array"
	case map[string]any:
		return "a map"
	}
	return fmt.Sprintf("%T", v)
}

// clip shortens text that came from a record before it is printed.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:61] + "..."
}
