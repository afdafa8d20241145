/* zone-preference as a Wasm policy: keep leaders in a preferred zone when the region
 * has a voter there. Config: {"batch": 16, "zone": "z1"}: params[0] = batch,
 * params[1] = the zone's label value id (the host resolves it). */
#include "kubepd_abi.h"

__attribute__((export_name("kubepd_schedule"))) i64 kubepd_schedule(Header *h, int len) {
  (void)len;
  u32 max = h->max_proposals;
  i64 batch = h->params[0] > 0 ? h->params[0] : 16;
  u32 zone = (u32)h->params[1];
  if ((u32)batch < max) max = (u32)batch;
  Out *o = out_begin(max);
  Store *s = STORES(h);
  Region *r = REGIONS(h);
  Peer *peers = PEERS(h);
  for (u32 i = 0; i < h->region_count && o->count < max; i++) {
    Region *g = &r[i];
    if (!(g->flags & REGION_HEALTHY) || (g->flags & REGION_HAS_OPERATOR)) continue;
    u32 leader_zone = 0xFFFFFFFFu;
    for (u32 j = 0; j < h->store_count; j++) if (s[j].id == g->leader_store) leader_zone = s[j].label_id;
    if (leader_zone == zone) continue;
    for (u32 k = 0; k < g->peer_count; k++) {
      Peer *p = &peers[g->peer_off + k];
      if (p->role != 0) continue;
      Store *t = 0;
      for (u32 j = 0; j < h->store_count; j++) if (s[j].id == p->store_id) t = &s[j];
      if (t && t->label_id == zone && (t->flags & STORE_LEADER_TARGET)) {
        out_add(o, max, TRANSFER_LEADER, g, g->leader_store, t->id, "wasm zone-preference: prefer the configured zone");
        break;
      }
    }
  }
  return out_done(o, max);
}
