/* evict-slow-store as a Wasm policy: move leaders off stores whose slow score reaches
 * the threshold, to the voter on the store with the fewest leaders.
 * Config: {"batch": 8, "threshold": 80}: params[0] = batch, params[1] = threshold. */
#include "kubepd_abi.h"

__attribute__((export_name("kubepd_schedule"))) i64 kubepd_schedule(Header *h, int len) {
  (void)len;
  u32 max = h->max_proposals;
  i64 batch = h->params[0] > 0 ? h->params[0] : 8;
  u32 threshold = h->params[1] > 0 ? (u32)h->params[1] : 80;
  if ((u32)batch < max) max = (u32)batch;
  Out *o = out_begin(max);
  Store *s = STORES(h);
  Region *r = REGIONS(h);
  Peer *peers = PEERS(h);
  for (u32 i = 0; i < h->region_count && o->count < max; i++) {
    Region *g = &r[i];
    if (!(g->flags & REGION_HEALTHY) || (g->flags & REGION_HAS_OPERATOR)) continue;
    Store *leader = 0;
    for (u32 j = 0; j < h->store_count; j++) if (s[j].id == g->leader_store) leader = &s[j];
    if (!leader || leader->slow_score < threshold) continue;
    Store *best = 0;
    for (u32 k = 0; k < g->peer_count; k++) {
      Peer *p = &peers[g->peer_off + k];
      if (p->role != 0 || p->store_id == g->leader_store) continue;
      for (u32 j = 0; j < h->store_count; j++) {
        Store *t = &s[j];
        if (t->id != p->store_id || !(t->flags & STORE_LEADER_TARGET) || t->slow_score >= threshold) continue;
        if (!best || t->leader_count < best->leader_count) best = t;
      }
    }
    if (best) {
      out_add(o, max, TRANSFER_LEADER, g, leader->id, best->id, "wasm evict-slow-store: leader store is slow");
      best->leader_count++;
    }
  }
  return out_done(o, max);
}
