// What the enforcement service checks of one action before it acts, and what it would do.
//
// The same checks as the pipeline's own `python -m pipeline verify` (pipeline/contract/verify.py): the signature,
// the fields of EnforcementAction v1 or v2 (v2: the verb lift, which ends the actions named in lifts), an
// enforce-mode key that is no public key and at least 32 bytes, no
// replay in enforce mode, and freshness against now.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"
)

// Key is one HMAC key the service holds: the current one, or a previous one during a rotation.
type Key struct {
	Name   string // "current", "previous-1", ...
	ID     string // first 16 hex chars of SHA-256 of the key: what the worker sends in dg.signing-key-id
	Secret []byte
}

const (
	minEnforceKeyBytes = 32
	futureSkewMs       = 5 * 60_000
	maxTs              = int64(1) << 53 // the schema's exclusive bound on ts and expires_ts
	replayMark         = "+replay"
)

// publicKeys are keys published in the repository (pipeline/contract/signing.py, DEVELOPMENT_KEYS): an action they
// signed may be shown in shadow mode, never carried out.
var publicKeys = map[string]bool{
	"distillation-guard-development-key:not-for-enforcement":           true,
	"change-me-dev-only-signing-key":                                   true,
	"example-analyst-key-public-in-schemas-examples":                   true,
	"example-action-key-public-in-schemas-examples":                    true,
	"signing-vector-key-1: public, signs nothing real":                 true,
	"signing-vector-key-2: public as well, the wrong key for vector 1": true,
}

var verbs = map[string]bool{"flag_for_review": true, "require_verification": true, "throttle": true,
	"suspend": true, "ban": true, "lift": true}

const maxLifts = 64 // EnforcementAction v2: at most this many ids in lifts

func newKey(name string, secret []byte) Key {
	sum := sha256.Sum256(secret)
	return Key{Name: name, ID: hex.EncodeToString(sum[:])[:16], Secret: secret}
}

// keysFromEnv reads the current key from currentVar and earlier ones (comma separated) from previousVar,
// each as the bytes of its UTF-8 text, as the worker reads DG_SIGNING_KEY.
func keysFromEnv(currentVar, previousVar string) ([]Key, error) {
	current := os.Getenv(currentVar)
	if current == "" {
		return nil, fmt.Errorf("no signing key: set %s (the HMAC key the worker signs with)", currentVar)
	}
	keys := []Key{newKey("current", []byte(current))}
	n := 0
	for _, k := range strings.Split(os.Getenv(previousVar), ",") {
		if k = strings.TrimSpace(k); k != "" {
			n++
			keys = append(keys, newKey(fmt.Sprintf("previous-%d", n), []byte(k)))
		}
	}
	return keys, nil
}

// Action is the part of an EnforcementAction (v1, or v2 for a lift) the service acts on.
type Action struct {
	Version                                uint64
	ID, Account, Verb, Mode, PolicyVersion string
	Ts                                     int64
	Expires                                *int64 // nil: never
	ReasonCodes, AlertIDs                  []string
	Lifts                                  []string // v2: the action ids a lift ends
}

func field[T any](m map[string]any, name string, problems *[]string) (T, bool) {
	var zero T
	v, ok := m[name]
	if !ok {
		*problems = append(*problems, "missing field "+name)
		return zero, false
	}
	t, ok := v.(T)
	if !ok {
		*problems = append(*problems, fmt.Sprintf("%s is %s", name, typeName(v)))
	}
	return t, ok
}

func boundedString(m map[string]any, name string, problems *[]string) string {
	s, ok := field[string](m, name, problems)
	if ok && (s == "" || len([]rune(s)) > 128) {
		*problems = append(*problems, name+" is not 1..128 characters")
	}
	return s
}

func epochMs(v any) (int64, bool) {
	n, ok := v.(uint64)
	return int64(n), ok && n > 0 && n < uint64(maxTs)
}

func stringList(m map[string]any, name string, problems *[]string) []string {
	items, ok := field[[]any](m, name, problems)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, isString := it.(string)
		if !isString || s == "" || len([]rune(s)) > 128 {
			*problems = append(*problems, name+" holds an item that is not a string of 1..128 characters")
			return nil
		}
		out = append(out, s)
	}
	return out
}

// parseAction checks the fields of EnforcementAction v1 or v2 the service relies on. Fields it does not
// know are ignored (they were covered by the signature all the same).
func parseAction(m map[string]any) (Action, []string) {
	var p []string
	var a Action
	a.Version, _ = m["schema_version"].(uint64)
	if a.Version != 1 && a.Version != 2 {
		p = append(p, "schema_version is neither 1 nor 2")
	}
	a.ID = boundedString(m, "action_id", &p)
	a.Account = boundedString(m, "account_id", &p)
	a.PolicyVersion = boundedString(m, "policy_version", &p)
	if verb, ok := field[string](m, "action", &p); ok {
		if !verbs[verb] {
			p = append(p, fmt.Sprintf("unknown action %q", clip(verb)))
		}
		a.Verb = verb
	}
	if mode, ok := field[string](m, "mode", &p); ok {
		if mode != "enforce" && mode != "shadow" {
			p = append(p, fmt.Sprintf("unknown mode %q", clip(mode)))
		}
		a.Mode = mode
	}
	if ts, ok := epochMs(m["ts"]); ok {
		a.Ts = ts
	} else {
		p = append(p, "ts is not epoch milliseconds")
	}
	if raw, present := m["expires_ts"]; !present {
		p = append(p, "missing field expires_ts")
	} else if raw != nil {
		if exp, ok := epochMs(raw); ok {
			a.Expires = &exp
		} else {
			p = append(p, "expires_ts is neither null nor epoch milliseconds")
		}
	}
	a.ReasonCodes = stringList(m, "reason_codes", &p)
	a.AlertIDs = stringList(m, "alert_ids", &p)
	if a.Version == 2 {
		a.Lifts = stringList(m, "lifts", &p)
		if len(a.Lifts) > maxLifts {
			p = append(p, fmt.Sprintf("lifts names %d ids, more than %d", len(a.Lifts), maxLifts))
		}
	} else if a.Verb == "lift" {
		p = append(p, "lift is a verb of EnforcementAction v2, not v1")
	}
	return a, p
}

func when(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05Z")
}

// Checker decides whether one record is an action to act on.
type Checker struct {
	Keys   []Key
	MaxAge time.Duration // 0: no limit
}

// Check returns the action, the key that signed it, and every problem found (none: act on it).
func (c *Checker) Check(raw []byte, nowMs int64) (Action, *Key, []string) {
	m, err := decodeMessage(raw)
	if err != nil {
		return Action{}, nil, []string{err.Error()}
	}
	a, problems := parseAction(m)
	key, err := checkSignature(m, c.Keys)
	if err != nil {
		problems = append(problems, err.Error())
	}
	replay := strings.HasSuffix(a.PolicyVersion, replayMark)
	if a.Mode == "enforce" {
		if replay {
			problems = append(problems, "a replay's action in enforce mode: replays are shadow only")
		}
		if key != nil && publicKeys[string(key.Secret)] {
			problems = append(problems, "enforce mode, but signed with a key that is public in the source")
		} else if key != nil && len(key.Secret) < minEnforceKeyBytes {
			problems = append(problems, fmt.Sprintf("enforce mode, but signed with a key of %d bytes, under %d",
				len(key.Secret), minEnforceKeyBytes))
		}
	}
	if a.Expires != nil && *a.Expires <= nowMs {
		problems = append(problems, fmt.Sprintf("expired at %s (now %s)", when(*a.Expires), when(nowMs)))
	}
	if a.Ts > 0 {
		if c.MaxAge > 0 && a.Ts < nowMs-c.MaxAge.Milliseconds() {
			problems = append(problems, fmt.Sprintf("too old: issued %s, more than -max-age before now (%s)",
				when(a.Ts), when(nowMs)))
		}
		if a.Ts > nowMs+futureSkewMs {
			problems = append(problems, fmt.Sprintf("issued in the future: %s (now %s)", when(a.Ts), when(nowMs)))
		}
	}
	return a, key, problems
}

// Would says, in words, what the service would do with an accepted action. For a lift, ended lists the
// named actions this service had acted on for the same account (the others it never took, or took for
// another account, which a lift of this account cannot end).
func Would(a Action, ended []string) string {
	until := "with no expiry"
	if a.Expires != nil {
		until = "until " + when(*a.Expires)
	}
	account := fmt.Sprintf("%q", a.Account)
	var do string
	switch a.Verb {
	case "flag_for_review":
		do = "open a review case for " + account
	case "require_verification":
		do = "require identity verification of " + account + " " + until
	case "throttle":
		do = "throttle " + account + " " + until
	case "suspend":
		do = "suspend " + account + " " + until
	case "ban":
		do = "ban " + account + " " + until
	case "lift":
		do = fmt.Sprintf("lift %d action(s) on %s: ended=%s", len(ended), account, strings.Join(ended, ","))
		if other := len(a.Lifts) - len(ended); other > 0 {
			do += fmt.Sprintf(" (%d other named id(s) were never acted on here for this account)", other)
		}
	}
	if a.Mode == "shadow" {
		return "would only record (shadow mode): " + do
	}
	return "would " + do
}

// Seen remembers the ids of actions already acted on, so that a re-delivered action is acted on once.
// Bounded: an id whose action has expired is forgotten (the action would be refused as expired anyway),
// and past Limit ids the oldest is forgotten. A real service keeps this in its own database.
type Seen struct {
	Limit   int
	first   map[string]string // action_id -> where it was first seen
	account map[string]string // action_id -> its account
	expires map[string]int64
	order   []string
}

// Where returns where the action was first acted on, if it was.
func (s *Seen) Where(id string) (string, bool) {
	w, ok := s.first[id]
	return w, ok
}

// Account returns the account of an action acted on, if it was.
func (s *Seen) Account(id string) (string, bool) {
	a, ok := s.account[id]
	return a, ok
}

// Add remembers an acted-on action.
func (s *Seen) Add(a Action, where string, nowMs int64) {
	if s.first == nil {
		s.first, s.account, s.expires = map[string]string{}, map[string]string{}, map[string]int64{}
	}
	s.first[a.ID] = where
	s.account[a.ID] = a.Account
	if a.Expires != nil {
		s.expires[a.ID] = *a.Expires
	}
	s.order = append(s.order, a.ID)
	if len(s.order) <= s.Limit {
		return
	}
	drop := len(s.order) - s.Limit*3/4 // trim to three quarters, so that trimming is rare
	kept := s.order[:0]
	for i, id := range s.order {
		exp, expires := s.expires[id]
		if (expires && exp <= nowMs) || i < drop {
			delete(s.first, id)
			delete(s.account, id)
			delete(s.expires, id)
			continue
		}
		kept = append(kept, id)
	}
	s.order = kept
}
