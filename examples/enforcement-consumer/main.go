// A small enforcement service, as an example of consuming the pipeline from another language: it reads
// EnforcementAction v1 and v2 (lift) records from the enforcement-actions topic, verifies each one's signature by the
// published rules (schemas/examples/signing/README.md), checks freshness, acts on each action_id once,
// and prints one line per record: ACCEPT with what it would do, REJECT with the reasons, or DUPLICATE.
//
// It acts on nothing: it says what it would do. See README.md beside this file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

const keyIDHeader = "dg.signing-key-id"

type config struct {
	bootstrap, topic, group string
	idle, assignWait        time.Duration
	now                     int64 // 0: the clock
	checker                 Checker
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// parseNow reads -now: epoch milliseconds or an RFC 3339 time.
func parseNow(text string) (int64, error) {
	if text == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseInt(text, 10, 64); err == nil && ms > 0 {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339, text)
	if err != nil {
		return 0, fmt.Errorf("-now %q: neither epoch milliseconds nor RFC 3339 (2026-03-02T10:00:00Z)", text)
	}
	return t.UnixMilli(), nil
}

func saslOption() (kgo.Opt, error) {
	protocol := strings.ToUpper(envOr("DG_SECURITY_PROTOCOL", "PLAINTEXT"))
	switch protocol {
	case "PLAINTEXT":
		return nil, nil
	case "SASL_PLAINTEXT":
	default:
		return nil, fmt.Errorf("DG_SECURITY_PROTOCOL=%s: this example speaks PLAINTEXT and SASL_PLAINTEXT only", protocol)
	}
	user, pass := os.Getenv("DG_SASL_USERNAME"), os.Getenv("DG_SASL_PASSWORD")
	if user == "" || pass == "" {
		return nil, errors.New("SASL_PLAINTEXT needs DG_SASL_USERNAME and DG_SASL_PASSWORD")
	}
	var mech sasl.Mechanism
	switch m := strings.ToUpper(envOr("DG_SASL_MECHANISM", "SCRAM-SHA-512")); m {
	case "SCRAM-SHA-512":
		mech = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	case "SCRAM-SHA-256":
		mech = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "PLAIN":
		mech = plain.Auth{User: user, Pass: pass}.AsMechanism()
	default:
		return nil, fmt.Errorf("DG_SASL_MECHANISM=%s: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN", m)
	}
	return kgo.SASL(mech), nil
}

func header(r *kgo.Record, name string) string {
	for _, h := range r.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// service handles records one at a time and keeps the counts.
type service struct {
	cfg                            config
	seen                           Seen
	out                            io.Writer
	accepted, rejected, duplicates int
}

func (s *service) nowMs() int64 {
	if s.cfg.now != 0 {
		return s.cfg.now
	}
	return time.Now().UnixMilli()
}

func (s *service) handle(r *kgo.Record) {
	where := fmt.Sprintf("%s[%d]@%d", r.Topic, r.Partition, r.Offset)
	now := s.nowMs()
	a, key, problems := s.cfg.checker.Check(r.Value, now)
	ids := fmt.Sprintf("action_id=%q account_id=%q", clip(a.ID), clip(a.Account))
	if len(problems) > 0 {
		s.rejected++
		fmt.Fprintf(s.out, "REJECT %s %s: %s\n", where, ids, strings.Join(problems, "; "))
		return
	}
	// only an accepted action is remembered: a forged record cannot use up a real action's id
	if first, dup := s.seen.Where(a.ID); dup {
		s.duplicates++
		fmt.Fprintf(s.out, "DUPLICATE %s %s: already handled at %s\n", where, ids, first)
		return
	}
	var ended []string // for a lift: the named actions taken here on the same account
	for _, id := range a.Lifts {
		if account, taken := s.seen.Account(id); taken && account == a.Account {
			ended = append(ended, id)
		}
	}
	s.seen.Add(a, where, now) // a lifted action stays remembered: its re-delivery must not apply it again
	s.accepted++
	keyNote := key.Name
	if sent := header(r, keyIDHeader); sent != "" && sent != key.ID {
		keyNote += fmt.Sprintf(" (the header named key %q)", clip(sent))
	}
	fmt.Fprintf(s.out, "ACCEPT %s %s action=%s mode=%s key=%s reasons=%s: %s\n", where, ids, a.Verb, a.Mode,
		keyNote, strings.Join(a.ReasonCodes, ","), Would(a, ended))
}

// consume reads the topic until the context ends, or until it has been idle for cfg.idle.
func consume(ctx context.Context, cfg config, out io.Writer) error {
	assigned := make(chan struct{})
	var once sync.Once
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(cfg.bootstrap, ",")...),
		kgo.ClientID("enforcement-consumer-example"),
		kgo.ConsumerGroup(cfg.group),
		kgo.ConsumeTopics(cfg.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), // a new group starts at the oldest retained action
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(), // offsets are committed after the records are handled: at least once
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			once.Do(func() { close(assigned) })
		}),
	}
	if opt, err := saslOption(); err != nil {
		return err
	} else if opt != nil {
		opts = append(opts, opt)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.CloseAllowingRebalance() // Close would wait for a rebalance this loop may be blocking

	s := &service{cfg: cfg, seen: Seen{Limit: 1_000_000}, out: out}
	defer func() {
		fmt.Fprintf(os.Stderr, "%d accepted, %d rejected, %d duplicates\n", s.accepted, s.rejected, s.duplicates)
	}()
	started := time.Now()
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if cfg.idle > 0 {
			pollCtx, cancel = context.WithTimeout(ctx, cfg.idle)
		}
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		for _, fe := range fetches.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "fetch error on %s[%d]: %v\n", fe.Topic, fe.Partition, fe.Err)
			}
		}
		n := 0
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			s.handle(r)
		})
		if n > 0 {
			// not ctx: what was handled is committed on SIGTERM too, so a restart does not read it again
			commitCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
			if err := cl.CommitUncommittedOffsets(commitCtx); err != nil {
				fmt.Fprintf(os.Stderr, "commit failed (the records will be read again): %v\n", err)
			}
			done()
		}
		cl.AllowRebalance()
		if n == 0 && cfg.idle > 0 {
			select {
			case <-assigned:
				return nil // idle after joining the group: done
			default:
				if time.Since(started) > cfg.assignWait {
					return fmt.Errorf("no partition of %s assigned within %s: is the broker at %s up, and the "+
						"topic there?", cfg.topic, cfg.assignWait, cfg.bootstrap)
				}
			}
		}
	}
}

func main() {
	prefix := os.Getenv("DG_TOPIC_PREFIX")
	var (
		bootstrap   = flag.String("bootstrap", envOr("DG_BOOTSTRAP", "127.0.0.1:9092"), "Kafka bootstrap servers, comma separated (env DG_BOOTSTRAP)")
		topic       = flag.String("topic", prefix+"enforcement-actions", "topic to read (DG_TOPIC_PREFIX + enforcement-actions)")
		group       = flag.String("group", "enforcement-consumer-example", "consumer group (the enforcement login may use groups starting with 'enforcement')")
		keyEnv      = flag.String("key-env", "DG_SIGNING_KEY", "environment variable holding the current signing key")
		previousEnv = flag.String("previous-keys-env", "DG_SIGNING_KEYS_PREVIOUS", "environment variable with earlier keys, comma separated")
		nowText     = flag.String("now", "", "judge freshness at this time (epoch ms or RFC 3339) instead of the clock, e.g. for an archive")
		maxAge      = flag.Duration("max-age", 0, "reject actions issued longer ago than this (e.g. 24h); 0: no limit")
		idle        = flag.Duration("idle", 0, "exit once no record has come for this long after joining the group; 0: run until interrupted")
		vectors     = flag.String("vectors", "", "check the signing test vectors in this folder and exit (0: all match)")
	)
	flag.Parse()
	if *vectors != "" {
		os.Exit(runVectors(*vectors, os.Stdout))
	}
	keys, err := keysFromEnv(*keyEnv, *previousEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	now, err := parseNow(*nowText)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	cfg := config{bootstrap: *bootstrap, topic: *topic, group: *group, idle: *idle, assignWait: 2 * time.Minute,
		now: now, checker: Checker{Keys: keys, MaxAge: *maxAge}}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := consume(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
