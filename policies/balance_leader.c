/* balance-leader as a Wasm policy: move leaders from the store with the most to the
 * store with the fewest, through regions that have a voter on the target, while the
 * gap is above the tolerance. Config: {"batch": 4, "tolerance": 5} (params by sorted key:
 * params[0] = batch, params[1] = tolerance). */
#include "kubepd_abi.h"

static Store *pick(Header *h, int most) {
  Store *s = STORES(h), *best = 0;
  for (u32 i = 0; i < h->store_count; i++) {
    if (!(s[i].flags & STORE_UP) || (s[i].flags & (STORE_DOWN | STORE_OFFLINE))) continue;
    if (!most && !(s[i].flags & STORE_LEADER_TARGET)) continue;
    if (!best || (most ? s[i].leader_count > best->leader_count : s[i].leader_count < best->leader_count)) best = &s[i];
  }
  return best;
}

__attribute__((export_name("kubepd_schedule"))) i64 kubepd_schedule(Header *h, int len) {
  (void)len;
  u32 max = h->max_proposals;
  i64 batch = h->params[0] > 0 ? h->params[0] : 4;
  i64 tol = h->params[1] > 0 ? h->params[1] : 5;
  if ((u32)batch < max) max = (u32)batch;
  Out *o = out_begin(max);
  Region *r = REGIONS(h);
  Peer *peers = PEERS(h);
  u32 cursor = 0;
  while (o->count < max) {
    Store *src = pick(h, 1), *dst = pick(h, 0);
    if (!src || !dst || src == dst) break;
    if ((i64)src->leader_count - 1 - tol <= (i64)dst->leader_count + 1 + tol) break;
    int moved = 0;
    for (u32 n = 0; n < h->region_count; n++, cursor = (cursor + 1) % h->region_count) {
      Region *g = &r[cursor];
      if (g->leader_store != src->id || !(g->flags & REGION_HEALTHY) || (g->flags & REGION_HAS_OPERATOR)) continue;
      for (u32 k = 0; k < g->peer_count; k++) {
        Peer *p = &peers[g->peer_off + k];
        if (p->store_id == dst->id && p->role == 0) {
          out_add(o, max, TRANSFER_LEADER, g, src->id, dst->id, "wasm balance-leader: source has more leaders");
          g->flags |= REGION_HAS_OPERATOR;
          src->leader_count--; dst->leader_count++;
          moved = 1;
          break;
        }
      }
      if (moved) break;
    }
    if (!moved) break;
  }
  return out_done(o, max);
}
