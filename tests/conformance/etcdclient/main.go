// Command etcdclient drives kubepd's etcd v3 API with the official Go client
// (go.etcd.io/etcd/client/v3, pinned in go.mod) and prints what it saw as one JSON
// object per scenario, so the Python tests can check it.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"encoding/json"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(b))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "etcdclient:", err)
	os.Exit(1)
}

func must[T any](v T, err error) T {
	if err != nil {
		fail(err)
	}
	return v
}

func kvList(resp *clientv3.GetResponse) []string {
	out := []string{}
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key)+"="+string(kv.Value))
	}
	return out
}

func scenarioKV(ctx context.Context, c *clientv3.Client) {
	res := map[string]any{}
	first := must(c.Put(ctx, "/app/a", "1"))
	must(c.Put(ctx, "/app/b", "2"))
	must(c.Put(ctx, "/app/c", "3"))
	prev := must(c.Put(ctx, "/app/a", "10", clientv3.WithPrevKV()))
	res["prev_value"] = string(prev.PrevKv.Value)
	res["prev_version"] = prev.PrevKv.Version
	all := must(c.Get(ctx, "/app/", clientv3.WithPrefix()))
	res["prefix"] = kvList(all)
	res["count"] = all.Count
	lim := must(c.Get(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithLimit(2)))
	res["limit"] = kvList(lim)
	res["limit_more"] = lim.More
	res["limit_count"] = lim.Count
	old := must(c.Get(ctx, "/app/a", clientv3.WithRev(first.Header.Revision)))
	res["at_first_rev"] = kvList(old)
	ko := must(c.Get(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	res["keys_only"] = kvList(ko)
	co := must(c.Get(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithCountOnly()))
	res["count_only"] = []any{co.Count, len(co.Kvs)}
	rng := must(c.Get(ctx, "/app/a", clientv3.WithRange("/app/c")))
	res["range"] = kvList(rng)
	desc := must(c.Get(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)))
	res["desc"] = kvList(desc)
	a := must(c.Get(ctx, "/app/a"))
	kv := a.Kvs[0]
	txn := must(c.Txn(ctx).If(
		clientv3.Compare(clientv3.Value("/app/a"), "=", "10"),
		clientv3.Compare(clientv3.Version("/app/a"), "=", 2),
		clientv3.Compare(clientv3.CreateRevision("/app/a"), "=", kv.CreateRevision),
		clientv3.Compare(clientv3.ModRevision("/app/a"), "=", kv.ModRevision),
	).Then(clientv3.OpPut("/app/t", "yes"), clientv3.OpGet("/app/t")).Else(clientv3.OpPut("/app/t", "no")).Commit())
	res["txn_ok"] = txn.Succeeded
	res["txn_read_own_write"] = string(txn.Responses[1].GetResponseRange().Kvs[0].Value)
	txn2 := must(c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("/app/a"), "<", kv.ModRevision)).
		Then(clientv3.OpPut("/app/t", "yes2")).Else(clientv3.OpGet("/app/t")).Commit())
	res["txn2_ok"] = txn2.Succeeded
	res["txn2_else"] = string(txn2.Responses[0].GetResponseRange().Kvs[0].Value)
	del := must(c.Delete(ctx, "/app/", clientv3.WithPrefix(), clientv3.WithPrevKV()))
	res["deleted"] = del.Deleted
	res["deleted_prev"] = len(del.PrevKvs)
	gone := must(c.Get(ctx, "/app/", clientv3.WithPrefix()))
	res["after_delete"] = len(gone.Kvs)
	res["rev_after"] = gone.Header.Revision
	// compaction: reads below the compact revision fail with etcd's typed error
	must(c.Compact(ctx, del.Header.Revision))
	_, err := c.Get(ctx, "/app/a", clientv3.WithRev(first.Header.Revision))
	res["compacted_err"] = errors.Is(err, rpctypes.ErrCompacted)
	_, err = c.Get(ctx, "/app/a", clientv3.WithRev(gone.Header.Revision+1000))
	res["future_err"] = errors.Is(err, rpctypes.ErrFutureRev)
	_, err = c.Put(ctx, "", "x")
	res["empty_key_err"] = errors.Is(err, rpctypes.ErrEmptyKey)
	_, err = c.Put(ctx, "/app/l", "x", clientv3.WithLease(12345))
	res["lease_not_found_err"] = errors.Is(err, rpctypes.ErrLeaseNotFound)
	ops := []clientv3.Op{}
	for i := 0; i < 129; i++ {
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("/many/%d", i), "x"))
	}
	_, err = c.Txn(ctx).Then(ops...).Commit()
	res["too_many_ops_err"] = errors.Is(err, rpctypes.ErrTooManyOps)
	_, err = c.Txn(ctx).Then(clientv3.OpPut("/dup", "1"), clientv3.OpPut("/dup", "2")).Commit()
	res["duplicate_key_err"] = errors.Is(err, rpctypes.ErrDuplicateKey)
	emit(res)
}

func scenarioWatch(ctx context.Context, c *clientv3.Client) {
	res := map[string]any{}
	start := must(c.Put(ctx, "/w/a", "1")).Header.Revision
	must(c.Put(ctx, "/w/b", "2"))
	must(c.Delete(ctx, "/w/a"))
	must(c.Put(ctx, "/other", "x"))
	wctx, cancel := context.WithCancel(ctx)
	wch := c.Watch(wctx, "/w/", clientv3.WithPrefix(), clientv3.WithRev(start), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	events := []string{}
	collect := func(n int) {
		for len(events) < n {
			select {
			case wr, ok := <-wch:
				if !ok {
					fail(errors.New("watch closed early"))
				}
				if err := wr.Err(); err != nil {
					fail(err)
				}
				for _, ev := range wr.Events {
					s := fmt.Sprintf("%s %s=%s", ev.Type, ev.Kv.Key, ev.Kv.Value)
					if ev.PrevKv != nil {
						s += " prev=" + string(ev.PrevKv.Value)
					}
					events = append(events, s)
				}
			case <-time.After(10 * time.Second):
				fail(fmt.Errorf("timed out waiting for watch events, have %v", events))
			}
		}
	}
	collect(3) // the history from start
	must(c.Put(ctx, "/w/c", "3"))
	must(c.Put(ctx, "/w/b", "22"))
	collect(5)
	res["events"] = events
	// a progress request is answered with the current revision
	if err := c.RequestProgress(ctx); err != nil {
		fail(err)
	}
	progress := int64(0)
	for progress == 0 {
		select {
		case wr := <-wch:
			if wr.IsProgressNotify() {
				progress = wr.Header.Revision
			}
		case <-time.After(10 * time.Second):
			fail(errors.New("no progress notification"))
		}
	}
	cur := must(c.Get(ctx, "/w/", clientv3.WithPrefix(), clientv3.WithCountOnly())).Header.Revision
	res["progress_is_current"] = progress == cur
	cancel()
	closed := false
	deadline := time.After(10 * time.Second)
	for !closed {
		select {
		case _, ok := <-wch:
			closed = !ok
		case <-deadline:
			fail(errors.New("canceled watch did not close"))
		}
	}
	res["closed_after_cancel"] = closed
	// a watch from a compacted revision reports ErrCompacted
	must(c.Compact(ctx, cur))
	cch := c.Watch(ctx, "/w/", clientv3.WithPrefix(), clientv3.WithRev(start))
	select {
	case wr := <-cch:
		res["compacted_watch"] = errors.Is(wr.Err(), rpctypes.ErrCompacted)
		res["compact_revision"] = wr.CompactRevision
	case <-time.After(10 * time.Second):
		fail(errors.New("no answer to a compacted watch"))
	}
	emit(res)
}

func scenarioLease(ctx context.Context, c *clientv3.Client) {
	res := map[string]any{}
	g := must(c.Grant(ctx, 30))
	res["granted_ttl"] = g.TTL
	must(c.Put(ctx, "/lease/g/k1", "v", clientv3.WithLease(g.ID)))
	must(c.Put(ctx, "/lease/g/k2", "v", clientv3.WithLease(g.ID)))
	ttl := must(c.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys()))
	ks := []string{}
	for _, k := range ttl.Keys {
		ks = append(ks, string(k))
	}
	sort.Strings(ks)
	res["ttl_keys"] = ks
	res["ttl_granted"] = ttl.GrantedTTL
	res["ttl_left_ok"] = ttl.TTL > 0 && ttl.TTL <= 30
	ls := must(c.Leases(ctx))
	found := false
	for _, l := range ls.Leases {
		found = found || l.ID == g.ID
	}
	res["listed"] = found
	ka := must(c.KeepAliveOnce(ctx, g.ID))
	res["keepalive_ttl"] = ka.TTL
	// a keep-alive stream on a short lease keeps its key past the TTL
	short := must(c.Grant(ctx, 3))
	must(c.Put(ctx, "/lease/kept", "v", clientv3.WithLease(short.ID)))
	kch := must(c.KeepAlive(ctx, short.ID))
	time.Sleep(4500 * time.Millisecond) // past the TTL: only keep-alives kept it
	<-kch
	res["kept_alive"] = len(must(c.Get(ctx, "/lease/kept")).Kvs) == 1
	// an unrenewed lease expires and takes its key with it
	exp := must(c.Grant(ctx, 2))
	must(c.Put(ctx, "/lease/expiring", "v", clientv3.WithLease(exp.ID)))
	expired := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if len(must(c.Get(ctx, "/lease/expiring")).Kvs) == 0 {
			expired = true
			break
		}
	}
	res["expired_key_gone"] = expired
	must(c.Revoke(ctx, g.ID))
	res["revoked_keys_gone"] = len(must(c.Get(ctx, "/lease/g/", clientv3.WithPrefix())).Kvs) == 0
	after := must(c.TimeToLive(ctx, g.ID))
	res["ttl_after_revoke"] = after.TTL
	_, err := c.Revoke(ctx, g.ID)
	res["revoke_again_not_found"] = errors.Is(err, rpctypes.ErrLeaseNotFound)
	_, err = c.Grant(ctx, 9_000_000_001)
	res["ttl_too_large"] = errors.Is(err, rpctypes.ErrLeaseTTLTooLarge)
	emit(res)
}

func scenarioElection(ctx context.Context, c *clientv3.Client) {
	res := map[string]any{}
	s1 := must(concurrency.NewSession(c, concurrency.WithTTL(5)))
	s2 := must(concurrency.NewSession(c, concurrency.WithTTL(5)))
	e1 := concurrency.NewElection(s1, "/election/")
	e2 := concurrency.NewElection(s2, "/election/")
	if err := e1.Campaign(ctx, "one"); err != nil {
		fail(err)
	}
	obsCtx, obsCancel := context.WithCancel(ctx)
	defer obsCancel()
	obs := e1.Observe(obsCtx)
	leaders := []string{}
	next := func() string {
		select {
		case r := <-obs:
			return string(r.Kvs[0].Value)
		case <-time.After(10 * time.Second):
			fail(errors.New("observe saw no leader"))
		}
		return ""
	}
	leaders = append(leaders, next())
	won := make(chan error, 1)
	go func() { won <- e2.Campaign(ctx, "two") }()
	select {
	case <-won:
		fail(errors.New("second candidate won while the first leads"))
	case <-time.After(500 * time.Millisecond):
	}
	res["second_waits"] = true
	if err := e1.Resign(ctx); err != nil {
		fail(err)
	}
	select {
	case err := <-won:
		if err != nil {
			fail(err)
		}
	case <-time.After(10 * time.Second):
		fail(errors.New("second candidate did not win after resign"))
	}
	leaders = append(leaders, next())
	l := must(e2.Leader(ctx))
	res["leader_now"] = string(l.Kvs[0].Value)
	// the leader's session dies: its lease goes, and with it the leadership
	if err := s2.Close(); err != nil {
		fail(err)
	}
	_, err := e1.Leader(ctx)
	res["no_leader_after_close"] = errors.Is(err, concurrency.ErrElectionNoLeader)
	res["observed"] = leaders
	s1.Close()
	emit(res)
}

func scenarioAllocID(ctx context.Context, c *clientv3.Client, key string, mark uint64) {
	res := map[string]any{}
	before := must(c.Get(ctx, key))
	res["before"] = binary.BigEndian.Uint64(before.Kvs[0].Value)
	buf := make([]byte, 8)
	binary.BigEndian.PutUint64(buf, mark)
	must(c.Put(ctx, key, string(buf)))
	after := must(c.Get(ctx, key))
	res["after"] = binary.BigEndian.Uint64(after.Kvs[0].Value)
	binary.BigEndian.PutUint64(buf, 5)
	must(c.Put(ctx, key, string(buf)))
	lower := must(c.Get(ctx, key))
	res["after_lower_put"] = binary.BigEndian.Uint64(lower.Kvs[0].Value)
	_, err := c.Put(ctx, key, "short")
	res["bad_value_err"] = fmt.Sprint(err)
	emit(res)
}

func main() {
	endpoint := flag.String("endpoint", "127.0.0.1:2379", "kubepd client address")
	scenario := flag.String("scenario", "kv", "kv | watch | lease | election | allocid")
	key := flag.String("key", "", "allocid: the alloc_id key")
	mark := flag.Uint64("mark", 0, "allocid: the mark to put")
	flag.Parse()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{*endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		fail(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch *scenario {
	case "kv":
		scenarioKV(ctx, c)
	case "watch":
		scenarioWatch(ctx, c)
	case "lease":
		scenarioLease(ctx, c)
	case "election":
		scenarioElection(ctx, c)
	case "allocid":
		scenarioAllocID(ctx, c, *key, *mark)
	default:
		fail(fmt.Errorf("unknown scenario %q", *scenario))
	}
}
