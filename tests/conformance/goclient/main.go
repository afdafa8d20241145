// Command pdclient drives a PD server with the official Go PD client
// (github.com/tikv/pd/client) and prints what it saw as JSON lines, so the Python
// conformance tests can check kubepd against the client TiDB and client-go use.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pingcap/kvproto/pkg/keyspacepb"
	"github.com/pingcap/kvproto/pkg/metapb"
	pd "github.com/tikv/pd/client"
	"github.com/tikv/pd/client/clients/router"
	pdhttp "github.com/tikv/pd/client/http"
	"github.com/tikv/pd/client/opt"
)

func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(b))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pdclient:", err)
	os.Exit(1)
}

func compose(physical, logical int64) uint64 { return uint64(physical)<<18 | uint64(logical) }

// TLS as TiDB configures it: a CA, and the certificate the client presents.
var security pd.SecurityOption

func newClient(ctx context.Context, addr string, useRouter bool) pd.Client {
	opts := []opt.ClientOption{opt.WithMaxErrorRetry(3), opt.WithCustomTimeoutOption(3 * time.Second)}
	if useRouter {
		opts = append(opts, opt.WithEnableRouterClient(true))
	}
	c, err := pd.NewClientWithContext(ctx, []string{addr}, security, opts...)
	if err != nil {
		fail(err)
	}
	return c
}

type peerJSON struct {
	ID      uint64 `json:"id"`
	StoreID uint64 `json:"store_id"`
	Role    int32  `json:"role"`
}

type regionJSON struct {
	ID       uint64     `json:"id"`
	Start    string     `json:"start"`
	End      string     `json:"end"`
	ConfVer  uint64     `json:"conf_ver"`
	Version  uint64     `json:"version"`
	Peers    []peerJSON `json:"peers"`
	LeaderID uint64     `json:"leader_id"`
}

func peerOf(p *metapb.Peer) peerJSON {
	return peerJSON{ID: p.GetId(), StoreID: p.GetStoreId(), Role: int32(p.GetRole())}
}

func regionOf(r *router.Region) *regionJSON {
	if r == nil || r.Meta == nil {
		return nil
	}
	out := &regionJSON{
		ID: r.Meta.GetId(), Start: hex.EncodeToString(r.Meta.GetStartKey()), End: hex.EncodeToString(r.Meta.GetEndKey()),
		ConfVer: r.Meta.GetRegionEpoch().GetConfVer(), Version: r.Meta.GetRegionEpoch().GetVersion(),
		LeaderID: r.Leader.GetId(),
	}
	for _, p := range r.Meta.GetPeers() {
		out.Peers = append(out.Peers, peerOf(p))
	}
	return out
}

func cmdMembers(ctx context.Context, c pd.Client) {
	members, err := c.GetAllMembers(ctx)
	if err != nil {
		fail(err)
	}
	names := []string{}
	for _, m := range members {
		names = append(names, m.GetName())
	}
	emit(map[string]any{"cluster_id": c.GetClusterID(ctx), "leader_url": c.GetLeaderURL(), "members": names})
}

// cmdTso fetches n timestamps from `workers` goroutines and checks them: strictly
// increasing within each goroutine and unique across all.
func cmdTso(ctx context.Context, c pd.Client, n, workers int) {
	start := time.Now()
	per := n / workers
	results := make([][]uint64, workers)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var last uint64
			for i := 0; i < per; i++ {
				p, l, err := c.GetTS(ctx)
				if err != nil {
					errs <- err
					return
				}
				ts := compose(p, l)
				if ts <= last {
					errs <- fmt.Errorf("worker %d: timestamp %d not above %d", w, ts, last)
					return
				}
				last = ts
				results[w] = append(results[w], ts)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail(err)
	}
	seen := make(map[uint64]struct{}, n)
	var all []uint64
	for _, r := range results {
		for _, ts := range r {
			if _, dup := seen[ts]; dup {
				fail(fmt.Errorf("duplicate timestamp %d", ts))
			}
			seen[ts] = struct{}{}
			all = append(all, ts)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	elapsed := time.Since(start).Seconds()
	emit(map[string]any{"count": len(all), "unique": len(seen), "min": all[0], "max": all[len(all)-1],
		"elapsed_s": elapsed, "per_second": float64(len(all)) / elapsed})
}

// cmdTsoLoad keeps asking for timestamps while the server is killed, restarted or
// fails over, and appends every one it gets (with the receive time) to a file.
func cmdTsoLoad(ctx context.Context, c pd.Client, d time.Duration, workers int, out string) {
	f, err := os.Create(out)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	var mu sync.Mutex
	count, errors := 0, 0
	var lastOK time.Time = time.Now()
	var longestGap time.Duration
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				p, l, err := c.GetTS(cctx)
				cancel()
				now := time.Now()
				mu.Lock()
				if err != nil {
					errors++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if gap := now.Sub(lastOK); gap > longestGap {
					longestGap = gap
				}
				lastOK = now
				count++
				fmt.Fprintf(f, "%d %d\n", compose(p, l), now.UnixNano())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	emit(map[string]any{"count": count, "errors": errors, "longest_gap_ms": longestGap.Milliseconds()})
}

func cmdRegions(ctx context.Context, c pd.Client, keys []string, id uint64) {
	out := map[string]any{}
	for _, k := range keys {
		r, err := c.GetRegion(ctx, []byte(k))
		if err != nil {
			fail(fmt.Errorf("GetRegion(%q): %w", k, err))
		}
		out["get:"+k] = regionOf(r)
		p, err := c.GetPrevRegion(ctx, []byte(k))
		if err != nil {
			fail(fmt.Errorf("GetPrevRegion(%q): %w", k, err))
		}
		out["prev:"+k] = regionOf(p)
	}
	if id != 0 {
		r, err := c.GetRegionByID(ctx, id)
		if err != nil {
			fail(fmt.Errorf("GetRegionByID(%d): %w", id, err))
		}
		out["by_id"] = regionOf(r)
	}
	scan, err := c.ScanRegions(ctx, []byte{}, []byte{}, 0)
	if err != nil {
		fail(fmt.Errorf("ScanRegions: %w", err))
	}
	var scanned []*regionJSON
	for _, r := range scan {
		scanned = append(scanned, regionOf(r))
	}
	out["scan"] = scanned
	batch, err := c.BatchScanRegions(ctx, []router.KeyRange{{StartKey: []byte{}, EndKey: []byte{}}}, 100, opt.WithOutputMustContainAllKeyRange())
	if err != nil {
		fail(fmt.Errorf("BatchScanRegions: %w", err))
	}
	var batched []*regionJSON
	for _, r := range batch {
		batched = append(batched, regionOf(r))
	}
	out["batch_scan"] = batched
	emit(out)
}

func cmdStores(ctx context.Context, c pd.Client, id uint64) {
	out := map[string]any{}
	if id != 0 {
		s, err := c.GetStore(ctx, id)
		if err != nil {
			fail(fmt.Errorf("GetStore(%d): %w", id, err))
		}
		out["store"] = map[string]any{"id": s.GetId(), "address": s.GetAddress(), "state": s.GetState().String()}
	}
	all, err := c.GetAllStores(ctx)
	if err != nil {
		fail(fmt.Errorf("GetAllStores: %w", err))
	}
	var ids []uint64
	for _, s := range all {
		ids = append(ids, s.GetId())
	}
	out["all"] = ids
	emit(out)
}

func cmdGC(ctx context.Context, c pd.Client) {
	sp, err := c.UpdateGCSafePoint(ctx, 100)
	if err != nil {
		fail(fmt.Errorf("UpdateGCSafePoint: %w", err))
	}
	back, err := c.UpdateGCSafePoint(ctx, 50)
	if err != nil {
		fail(fmt.Errorf("UpdateGCSafePoint: %w", err))
	}
	min, err := c.UpdateServiceGCSafePoint(ctx, "conformance", 600, 200)
	if err != nil {
		fail(fmt.Errorf("UpdateServiceGCSafePoint: %w", err))
	}
	emit(map[string]any{"safe_point": sp, "after_lower": back, "service_min": min})
}

// cmdKeyspace looks a keyspace up by name as a keyspace-aware client starts, then uses a
// client bound to that keyspace id (TSO, the keyspace API, a state change).
func cmdKeyspace(ctx context.Context, c pd.Client, addr, name string) {
	meta, err := c.LoadKeyspace(ctx, name)
	if err != nil {
		fail(fmt.Errorf("LoadKeyspace(%s): %w", name, err))
	}
	kc, err := pd.NewClientWithKeyspace(ctx, meta.GetId(), []string{addr}, pd.SecurityOption{},
		opt.WithMaxErrorRetry(3), opt.WithCustomTimeoutOption(3*time.Second))
	if err != nil {
		fail(fmt.Errorf("NewClientWithKeyspace(%d): %w", meta.GetId(), err))
	}
	defer kc.Close()
	physical, _, err := kc.GetTS(ctx)
	if err != nil {
		fail(fmt.Errorf("GetTS in keyspace %d: %w", meta.GetId(), err))
	}
	all, err := kc.GetAllKeyspaces(ctx, 0, 0)
	if err != nil {
		fail(fmt.Errorf("GetAllKeyspaces: %w", err))
	}
	var names []string
	for _, k := range all {
		names = append(names, k.GetName())
	}
	after, err := kc.UpdateKeyspaceState(ctx, meta.GetId(), keyspacepb.KeyspaceState_DISABLED)
	if err != nil {
		fail(fmt.Errorf("UpdateKeyspaceState: %w", err))
	}
	// PD's Go HTTP client finds the leader with gRPC, then sends HTTP to its client URL.
	hc := pdhttp.NewClient("kubepd-conformance", []string{"http://" + addr})
	if hc == nil {
		fail(fmt.Errorf("pdhttp.NewClient failed"))
	}
	defer hc.Close()
	gc := &pdhttp.KeyspaceGCManagementTypeConfig{
		Config: pdhttp.KeyspaceGCManagementType{GCManagementType: "global_gc"},
	}
	if err := hc.UpdateKeyspaceGCManagementType(ctx, name, gc); err != nil {
		fail(fmt.Errorf("UpdateKeyspaceGCManagementType: %w", err))
	}
	viaHTTP, err := hc.GetKeyspaceMetaByName(ctx, name)
	if err != nil {
		fail(fmt.Errorf("GetKeyspaceMetaByName: %w", err))
	}
	_, missing := c.LoadKeyspace(ctx, "no_such_keyspace")
	missingErr := ""
	if missing != nil {
		missingErr = missing.Error()
	}
	emit(map[string]any{
		"id": meta.GetId(), "name": meta.GetName(), "state": meta.GetState().String(),
		"config": meta.GetConfig(), "ts_physical": physical, "all": names,
		"state_after": after.GetState().String(), "missing_error": missingErr,
		"http_id": viaHTTP.GetId(), "http_state": viaHTTP.GetState().String(),
		"http_config": viaHTTP.GetConfig(),
	})
}

func main() {
	addr := flag.String("pd", "127.0.0.1:2379", "PD address host:port")
	n := flag.Int("n", 10000, "tso: number of timestamps")
	workers := flag.Int("workers", 16, "tso, tso-load: concurrent goroutines")
	duration := flag.Duration("duration", 10*time.Second, "tso-load: how long to run")
	out := flag.String("out", "tso.txt", "tso-load: file for the timestamps")
	keys := flag.String("keys", "", "regions: comma-separated keys to look up")
	id := flag.Uint64("id", 0, "regions: region id; stores: store id")
	useRouter := flag.Bool("router", false, "use the QueryRegion batch router for region lookups")
	keyspace := flag.String("keyspace", "DEFAULT", "keyspace: the keyspace name to load and use")
	flag.StringVar(&security.CAPath, "cacert", "", "CA certificate (PEM): talk to PD over TLS")
	flag.StringVar(&security.CertPath, "cert", "", "client certificate (PEM) to present")
	flag.StringVar(&security.KeyPath, "key", "", "key of -cert")
	flag.Parse()
	if flag.NArg() != 1 {
		fail(fmt.Errorf("usage: pdclient [flags] members|tso|tso-load|regions|stores|gc|keyspace"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration+60*time.Second)
	defer cancel()
	c := newClient(ctx, *addr, *useRouter)
	defer c.Close()
	switch flag.Arg(0) {
	case "members":
		cmdMembers(ctx, c)
	case "tso":
		cmdTso(ctx, c, *n, *workers)
	case "tso-load":
		cmdTsoLoad(ctx, c, *duration, *workers, *out)
	case "regions":
		var ks []string
		if *keys != "" {
			ks = strings.Split(*keys, ",")
		}
		cmdRegions(ctx, c, ks, *id)
	case "stores":
		cmdStores(ctx, c, *id)
	case "gc":
		cmdGC(ctx, c)
	case "keyspace":
		cmdKeyspace(ctx, c, *addr, *keyspace)
	default:
		fail(fmt.Errorf("unknown command %q", flag.Arg(0)))
	}
}
