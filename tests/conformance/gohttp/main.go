// Command pdhttp drives kubepd's HTTP API with PD's own Go HTTP client
// (github.com/tikv/pd/client/http) and prints what every call returned as one JSON
// object, so the Python test can check the answers decode into PD's types.
//
// With -discover the client finds PD as users' programs do: its default discovery
// asks GetMembers over gRPC on the client URL it is given, then sends HTTP/1.1 to the
// members' client URLs (the same port). Without it, a fixed discovery points at the
// URL as is (the status port, which speaks HTTP/1.1 only).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	pdhttp "github.com/tikv/pd/client/http"
	"github.com/tikv/pd/client/pkg/utils/tlsutil"
	sd "github.com/tikv/pd/client/servicediscovery"
)

type result struct {
	OK    bool   `json:"ok"`
	Err   string `json:"err,omitempty"`
	Value any    `json:"value,omitempty"`
}

func main() {
	url := flag.String("url", "", "kubepd URL, http://host:port (status URL, or client URL with -discover)")
	discover := flag.Bool("discover", false, "find the members by gRPC at -url (PD's default discovery)")
	s1 := flag.Uint64("store", 0, "a store id")
	s2 := flag.Uint64("store2", 0, "another store id")
	r1 := flag.Uint64("region", 0, "a region id")
	var sec tlsutil.TLSConfig
	flag.StringVar(&sec.CAPath, "cacert", "", "CA certificate (PEM): call over TLS (an https URL)")
	flag.StringVar(&sec.CertPath, "cert", "", "client certificate (PEM) to present")
	flag.StringVar(&sec.KeyPath, "key", "", "key of -cert")
	probe := flag.Bool("probe", false, "only GetMembers and GetStores: may this client call at all?")
	ruleWrites := flag.Bool("rule-writes", false, "write placement rules too (the embedded mode takes them)")
	flag.Parse()

	// nil without -cacert: plain HTTP, as before.
	tlsCfg, err := sec.ToTLSConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pdhttp:", err)
		os.Exit(1)
	}
	var cli pdhttp.Client
	if *discover {
		cli = pdhttp.NewClient("kubepd-conformance", []string{*url}, pdhttp.WithTLSConfig(tlsCfg))
		if cli == nil {
			fmt.Fprintln(os.Stderr, "pdhttp: service discovery failed at", *url)
			os.Exit(1)
		}
	} else {
		disc := sd.NewMockPDServiceDiscovery([]string{*url}, tlsCfg)
		if err := disc.Init(); err != nil {
			fmt.Fprintln(os.Stderr, "pdhttp:", err)
			os.Exit(1)
		}
		cli = pdhttp.NewClientWithServiceDiscovery("kubepd-conformance", disc, pdhttp.WithTLSConfig(tlsCfg))
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out := map[string]result{}
	record := func(name string, v any, err error) {
		if err != nil {
			out[name] = result{Err: err.Error()}
			return
		}
		out[name] = result{OK: true, Value: v}
	}
	do := func(name string, err error) { record(name, nil, err) }

	members, err := cli.GetMembers(ctx)
	if err == nil {
		record("members", map[string]any{"count": len(members.Members), "leader": members.Leader.GetName()}, nil)
	} else {
		record("members", nil, err)
	}
	if *probe {
		_, err := cli.GetStores(ctx)
		record("stores", nil, err)
		report(out)
		return
	}
	leader, err := cli.GetLeader(ctx)
	record("leader", leader.GetName(), err)
	health, err := cli.GetHealthStatus(ctx)
	record("health", health, err)
	status, err := cli.GetStatus(ctx)
	record("status", status, err)
	version, err := cli.GetPDVersion(ctx)
	record("version", version, err)
	cluster, err := cli.GetCluster(ctx)
	record("cluster", cluster.GetMaxPeerCount(), err)
	cstatus, err := cli.GetClusterStatus(ctx)
	record("cluster_status", cstatus, err)

	stores, err := cli.GetStores(ctx)
	if err == nil {
		ids := []int64{}
		for _, s := range stores.Stores {
			ids = append(ids, s.Store.ID)
		}
		record("stores", map[string]any{"count": stores.Count, "ids": ids, "first_state": stores.Stores[0].Store.StateName}, nil)
	} else {
		record("stores", nil, err)
	}
	store, err := cli.GetStore(ctx, *s1)
	record("store", store, err)
	_, err = cli.GetStore(ctx, 987654321)
	record("store_missing", nil, err)
	do("store_labels", cli.SetStoreLabels(ctx, int64(*s2), map[string]string{"zone": "z2"}))
	do("store_label_delete", cli.DeleteStoreLabel(ctx, int64(*s2), "zone"))

	regions, err := cli.GetRegions(ctx)
	record("regions", regions, err)
	region, err := cli.GetRegionByID(ctx, *r1)
	record("region", region, err)
	_, err = cli.GetRegionByID(ctx, 987654321)
	record("region_missing", nil, err)
	byKey, err := cli.GetRegionByKey(ctx, []byte("a"))
	record("region_key_a", byKey.ID, err)
	byKey, err = cli.GetRegionByKey(ctx, []byte("t\x80\x00\x01"))
	record("region_key_binary", byKey.ID, err)
	scan, err := cli.GetRegionsByKeyRange(ctx, pdhttp.NewKeyRange([]byte("a"), []byte("z")), 10)
	record("regions_range", scan.Count, err)
	byStore, err := cli.GetRegionsByStoreID(ctx, *s1)
	record("regions_store", byStore.Count, err)
	empty, err := cli.GetEmptyRegions(ctx)
	record("regions_empty", empty.Count, err)
	stats, err := cli.GetRegionStatusByKeyRange(ctx, pdhttp.NewKeyRange([]byte(""), []byte("")), false)
	record("region_stats", stats, err)
	replicated, err := cli.GetRegionsReplicatedStateByKeyRange(ctx, pdhttp.NewKeyRange([]byte(""), []byte("")))
	record("replicated", replicated, err)
	hotRead, err := cli.GetHotReadRegions(ctx)
	record("hot_read", hotRead, err)
	hotWrite, err := cli.GetHotWriteRegions(ctx)
	record("hot_write", hotWrite, err)

	cfg, err := cli.GetConfig(ctx)
	if err == nil {
		sched := cfg["schedule"].(map[string]any)
		record("config", map[string]any{"max-store-down-time": sched["max-store-down-time"], "halt-scheduling": sched["halt-scheduling"]}, nil)
	} else {
		record("config", nil, err)
	}
	do("set_config", cli.SetConfig(ctx, map[string]any{"schedule.max-store-down-time": "45m", "max-replicas": 3.0}))
	do("set_config_bad", cli.SetConfig(ctx, map[string]any{"max-replicas": "three"}))
	do("set_schedule", cli.SetScheduleConfig(ctx, map[string]any{"leader-schedule-limit": 6}))
	schedCfg, err := cli.GetScheduleConfig(ctx)
	if err == nil {
		record("schedule", map[string]any{"leader-schedule-limit": schedCfg["leader-schedule-limit"], "max-store-down-time": schedCfg["max-store-down-time"]}, nil)
	} else {
		record("schedule", nil, err)
	}
	repl, err := cli.GetReplicateConfig(ctx)
	record("replicate", repl, err)
	cv, err := cli.GetClusterVersion(ctx)
	record("cluster_version", cv, err)

	scheds, err := cli.GetSchedulers(ctx)
	record("schedulers", scheds, err)
	do("evict_add", cli.CreateScheduler(ctx, "evict-leader-scheduler", *s2))
	evict := "evict-leader-scheduler-" + strconv.FormatUint(*s2, 10)
	evictCfg, err := cli.GetSchedulerConfig(ctx, evict)
	record("evict_config", evictCfg, err)
	do("evict_remove", cli.DeleteScheduler(ctx, evict))
	do("scheduler_delay", cli.SetSchedulerDelay(ctx, "balance-leader-scheduler", 60))
	do("operators_delete", cli.DeleteOperators(ctx))

	bundles, err := cli.GetAllPlacementRuleBundles(ctx)
	record("rule_bundles", bundles, err)
	rule, err := cli.GetPlacementRule(ctx, "pd", "default")
	record("rule", rule, err)
	groups, err := cli.GetAllPlacementRuleGroups(ctx)
	record("rule_groups", groups, err)
	if *ruleWrites {
		placementWrites(ctx, cli, record, do)
	}
	labelRules, err := cli.GetAllRegionLabelRules(ctx)
	record("label_rules", labelRules, err)

	ts, perStore, err := cli.GetMinResolvedTSByStoresIDs(ctx, []uint64{*s1})
	record("min_resolved_ts", map[string]any{"ts": ts, "stores": perStore}, err)
	gc, err := cli.GetGCSafePoint(ctx)
	record("gc", gc, err)
	msg, err := cli.DeleteGCSafePoint(ctx, "ticdc")
	record("gc_delete", msg, err)

	report(out)
}

// placementWrites writes placement rules as TiDB's placement policies and pd-ctl do:
// one rule, a refused one, a batch, a rule group, a bundle; then deletes them again.
func placementWrites(
	ctx context.Context, cli pdhttp.Client, record func(string, any, error), do func(string, error),
) {
	// Raw keys: the client sends them encoded (memcomparable), as TiDB's are.
	learner := &pdhttp.Rule{
		GroupID: "conf", ID: "learner", Role: pdhttp.Learner, Count: 1,
		StartKey: []byte("a"), EndKey: []byte("b"),
	}
	do("rule_set", cli.SetPlacementRule(ctx, learner))
	written, err := cli.GetPlacementRule(ctx, "conf", "learner")
	record("rule_written", written, err)
	do("rule_set_bad", cli.SetPlacementRule(ctx, &pdhttp.Rule{
		GroupID: "conf", ID: "bad", Role: pdhttp.Voter, Count: 0,
	}))
	do("rule_batch", cli.SetPlacementRuleInBatch(ctx, []*pdhttp.RuleOp{
		{Rule: &pdhttp.Rule{GroupID: "conf", ID: "v-1", Role: pdhttp.Voter, Count: 1}, Action: pdhttp.RuleOpAdd},
		{Rule: &pdhttp.Rule{GroupID: "conf", ID: "learner"}, Action: pdhttp.RuleOpDel},
	}))
	confRules, err := cli.GetPlacementRulesByGroup(ctx, "conf")
	record("rules_conf", confRules, err)
	do("rule_group_set", cli.SetPlacementRuleGroup(ctx, &pdhttp.RuleGroup{ID: "conf", Index: 5}))
	group, err := cli.GetPlacementRuleGroupByID(ctx, "conf")
	record("rule_group", group, err)
	do("rule_bundles_set", cli.SetPlacementRuleBundles(ctx, []*pdhttp.GroupBundle{{
		ID: "conf", Index: 6, Rules: []*pdhttp.Rule{{ID: "v-2", Role: pdhttp.Voter, Count: 2}},
	}}, true))
	bundle, err := cli.GetPlacementRuleBundleByGroup(ctx, "conf")
	record("rule_bundle", bundle, err)
	do("rule_delete", cli.DeletePlacementRule(ctx, "conf", "v-2"))
	do("rule_group_delete", cli.DeletePlacementRuleGroupByID(ctx, "conf"))
	after, err := cli.GetAllPlacementRuleBundles(ctx)
	record("rule_bundles_after", after, err)
}

func report(out map[string]result) {
	b, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pdhttp:", err)
		os.Exit(1)
	}
	fmt.Println(string(b))
}
