/* kubepd scheduling-policy ABI v1 for C guests (no libc). See docs/wasm-abi.md. */
#ifndef KUBEPD_ABI_H
#define KUBEPD_ABI_H

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define KUBEPD_ABI_VERSION 1
#define PROPOSALS_MAGIC 0x5244504Bu

enum { STORE_UP = 1, STORE_DOWN = 2, STORE_OFFLINE = 4, STORE_BUSY = 8,
       STORE_LEADER_TARGET = 16, STORE_REGION_TARGET = 32, STORE_SLOW = 64 };
enum { REGION_HEALTHY = 1, REGION_HAS_OPERATOR = 2 };
enum { TRANSFER_LEADER = 1, MOVE_PEER = 2, ADD_LEARNER = 3, REMOVE_PEER = 4 };

typedef struct {
  u32 magic, version, store_count, region_count, peer_count, max_proposals;
  u32 config_off, config_len, stores_off, regions_off, peers_off, reserved;
  i64 params[8];
} Header;

typedef struct { u64 id; u32 leader_count, region_count, region_size, flags, slow_score, label_id, r0, r1; } Store;
typedef struct { u64 id; u32 conf_ver, version; u64 leader_store; u32 size_mib, flags, peer_off, peer_count; } Region;
typedef struct { u64 store_id; u32 role, r0; } Peer;
typedef struct { u32 kind, r0; u64 region_id; u32 conf_ver, version; u64 source, target; u32 reason_off, reason_len; } Proposal;

__attribute__((import_module("kubepd"), import_name("log"))) void kubepd_log(int level, const char *p, int len);

/* A bump allocator above the data segment that grows linear memory on demand;
 * kubepd_reset frees everything between runs. */
extern unsigned char __heap_base;
static u32 top;

__attribute__((export_name("kubepd_abi_version"))) int kubepd_abi_version(void) { return KUBEPD_ABI_VERSION; }
__attribute__((export_name("kubepd_reset"))) void kubepd_reset(void) { top = (u32)(unsigned long)&__heap_base; }
__attribute__((export_name("kubepd_alloc"))) void *kubepd_alloc(int size) {
  if (!top) kubepd_reset();
  u32 at = (top + 15) & ~15u;
  if (size < 0) return 0;
  u32 end = at + (u32)size;
  u32 have = (u32)__builtin_wasm_memory_size(0) * 65536u;
  if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (unsigned long)-1) return 0;
  top = end;
  return (void *)(unsigned long)at;
}

/* Proposal output: header {magic, count} then records, then reason bytes. */
typedef struct { u32 magic, count; Proposal items[]; } Out;

static Out *out_begin(u32 max) {
  Out *o = (Out *)kubepd_alloc(8 + max * (u32)sizeof(Proposal) + max * 64);
  o->magic = PROPOSALS_MAGIC;
  o->count = 0;
  return o;
}

static u32 slen(const char *s) { u32 n = 0; while (s[n]) n++; return n; }

static void out_add(Out *o, u32 max, u32 kind, const Region *r, u64 src, u64 dst, const char *why) {
  Proposal *p = &o->items[o->count];
  unsigned char *reason = (unsigned char *)&o->items[max] + o->count * 64;
  u32 n = slen(why);
  if (n > 64) n = 64;
  for (u32 i = 0; i < n; i++) reason[i] = (unsigned char)why[i];
  p->kind = kind; p->r0 = 0; p->region_id = r->id; p->conf_ver = r->conf_ver; p->version = r->version;
  p->source = src; p->target = dst;
  p->reason_off = (u32)(reason - (unsigned char *)o); p->reason_len = n;
  o->count++;
}

static i64 out_done(Out *o, u32 max) {
  u32 len = 8 + max * (u32)sizeof(Proposal) + max * 64;
  return ((i64)(u32)(unsigned long)o << 32) | len;
}

#define STORES(h) ((Store *)((unsigned char *)(h) + (h)->stores_off))
#define REGIONS(h) ((Region *)((unsigned char *)(h) + (h)->regions_off))
#define PEERS(h) ((Peer *)((unsigned char *)(h) + (h)->peers_off))

#endif
