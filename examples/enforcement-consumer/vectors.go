// -vectors DIR: check this program's decoding, canonical encoding and HMAC against the published signing
// test vectors (schemas/examples/signing/*.json).
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type vector struct {
	KeyHex         string `json:"key_hex"`
	MessageHex     string `json:"message_msgpack_hex"`
	CanonicalHex   string `json:"canonical_msgpack_hex"`
	HMAC           string `json:"hmac_sha256_hex"`
	SignatureValid *bool  `json:"signature_valid"`
}

// checkVector returns what does not match in one vector file, or nil.
func checkVector(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var v vector
	if err := json.Unmarshal(data, &v); err != nil {
		return []string{"not a vector: " + err.Error()}
	}
	key, err1 := hex.DecodeString(v.KeyHex)
	raw, err2 := hex.DecodeString(v.MessageHex)
	if err1 != nil || err2 != nil || len(key) == 0 || v.CanonicalHex == "" || v.HMAC == "" || v.SignatureValid == nil {
		return []string{"not a vector: key_hex, message_msgpack_hex, canonical_msgpack_hex, hmac_sha256_hex " +
			"and signature_valid are needed"}
	}
	m, err := decodeMessage(raw)
	if err != nil {
		return []string{"cannot decode the message: " + err.Error()}
	}
	var problems []string
	payload, err := signingPayload(m)
	if err != nil {
		return []string{"cannot encode canonically: " + err.Error()}
	}
	if got := hex.EncodeToString(payload); got != v.CanonicalHex {
		problems = append(problems, "canonical bytes differ "+firstDifference(got, v.CanonicalHex))
	}
	if got := mac(key, payload); got != v.HMAC {
		problems = append(problems, fmt.Sprintf("HMAC %s, the vector says %s", got, v.HMAC))
	}
	_, sigErr := checkSignature(m, []Key{newKey("vector", key)})
	if valid := sigErr == nil; valid != *v.SignatureValid {
		why := "accepted"
		if sigErr != nil {
			why = "rejected: " + sigErr.Error()
		}
		problems = append(problems, fmt.Sprintf("signature %s, the vector says valid=%v", why, *v.SignatureValid))
	}
	return problems
}

func firstDifference(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	i -= i % 2
	end := func(s string) string { return s[i:min(len(s), i+16)] }
	return fmt.Sprintf("at byte %d: %s… where the vector has %s…", i/2, end(got), end(want))
}

// runVectors prints one line per vector and returns the process exit code: 0 if every vector matched.
func runVectors(dir string, out io.Writer) int {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	sort.Strings(paths)
	if len(paths) == 0 {
		fmt.Fprintf(out, "FAIL no *.json vectors in %s\n", dir)
		return 1
	}
	failed := 0
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		if problems := checkVector(p); len(problems) > 0 {
			failed++
			fmt.Fprintf(out, "FAIL %s: %s\n", name, strings.Join(problems, "; "))
		} else {
			fmt.Fprintf(out, "ok   %s\n", name)
		}
	}
	fmt.Fprintf(out, "%d vectors match, %d differ\n", len(paths)-failed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}
