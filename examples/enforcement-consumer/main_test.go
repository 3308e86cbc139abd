package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func pack(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRefusesWhatCouldBeReadTwoWays(t *testing.T) {
	oneMap := pack(t, map[string]any{"a": 1})
	cases := map[string]struct {
		raw  []byte
		want string
	}{
		"trailing bytes":   {append(append([]byte{}, oneMap...), 0xc0), "bytes after it"},
		"not a map":        {pack(t, []any{1}), "not a msgpack map"},
		"duplicate key":    {[]byte{0x82, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02}, `duplicate key "a"`},
		"non-string key":   {[]byte{0x81, 0x01, 0x01}, "not a string"},
		"invalid UTF-8":    {[]byte{0x81, 0xa1, 'a', 0xa1, 0xff}, "not valid UTF-8"},
		"extension":        {[]byte{0x81, 0xa1, 'a', 0xd4, 0x01, 0x00}, "extension"},
		"truncated":        {[]byte{0x82, 0xa1, 'a', 0x01}, "truncated"},
		"a huge count":     {[]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, ""},
		"nested too deep":  {append(bytes.Repeat([]byte{0x81, 0xa1, 'a'}, maxDepth+2), 0xc0), "nested deeper"},
		"reserved code c1": {[]byte{0x81, 0xa1, 'a', 0xc1}, "not valid"},
	}
	for name, c := range cases {
		_, err := decodeMessage(c.raw)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got error %v, want one containing %q", name, err, c.want)
		}
	}
}

func TestCanonicalFormIgnoresHowTheValueWasEncoded(t *testing.T) {
	// {"b": int64(1), "a": float32(0.5)} and {"a": 0.5, "b": 1} are the same action
	wire := []byte{0x82, 0xa1, 'b', 0xd3, 0, 0, 0, 0, 0, 0, 0, 1, 0xa1, 'a', 0xca, 0x3f, 0, 0, 0}
	m, err := decodeMessage(wire)
	if err != nil {
		t.Fatal(err)
	}
	got, err := canonical(m)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x82, 0xa1, 'a', 0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0, 0xa1, 'b', 0x01}
	if !bytes.Equal(got, want) {
		t.Fatalf("canonical % x, want % x", got, want)
	}
}

func TestSeenForgetsExpiredAndOldestIdsPastItsLimit(t *testing.T) {
	s := Seen{Limit: 4}
	expired, later := int64(1_000), int64(9_000)
	s.Add(Action{ID: "expired", Expires: &expired}, "p0@0", 500)
	for i, id := range []string{"a", "b", "c", "d"} {
		s.Add(Action{ID: id, Expires: &later}, "p0@"+string(rune('1'+i)), 2_000)
	}
	if _, ok := s.Where("expired"); ok {
		t.Error("an expired action's id is kept past the limit")
	}
	for _, id := range []string{"b", "c", "d"} {
		if _, ok := s.Where(id); !ok {
			t.Errorf("%s forgotten too early", id)
		}
	}
	if len(s.order) > s.Limit {
		t.Errorf("%d ids kept, limit %d", len(s.order), s.Limit)
	}
}

func TestWouldSaysShadowActionsAreOnlyRecorded(t *testing.T) {
	exp := int64(1_772_409_600_000)
	a := Action{Account: "acct-1", Verb: "throttle", Mode: "shadow", Expires: &exp}
	if got := Would(a, nil); got != `would only record (shadow mode): throttle "acct-1" until 2026-03-02T00:00:00Z` {
		t.Error(got)
	}
	a.Mode = "enforce"
	if got := Would(a, nil); !strings.HasPrefix(got, `would throttle "acct-1"`) {
		t.Error(got)
	}
}

func TestALiftEndsOnlyWhatItNamesThatWasTakenHere(t *testing.T) {
	a := Action{Account: "acct-1", Verb: "lift", Mode: "enforce", Lifts: []string{"act-1", "act-2", "act-3"}}
	got := Would(a, []string{"act-2"})
	want := `would lift 1 action(s) on "acct-1": ended=act-2 (2 other named id(s) were never acted on here for this account)`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestAV1ActionCannotBeALift(t *testing.T) {
	m := map[string]any{"schema_version": uint64(1), "action_id": "x", "account_id": "a", "policy_version": "p",
		"action": "lift", "mode": "enforce", "ts": uint64(1), "expires_ts": nil, "reason_codes": []any{},
		"alert_ids": []any{}}
	if _, problems := parseAction(m); len(problems) != 1 || !strings.Contains(problems[0], "v2") {
		t.Errorf("problems %v", problems)
	}
	m["schema_version"], m["lifts"] = uint64(2), []any{"act-1"}
	if a, problems := parseAction(m); len(problems) != 0 || len(a.Lifts) != 1 {
		t.Errorf("v2 lift refused: %v", problems)
	}
}
