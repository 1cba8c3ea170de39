// Cache jobs: the long control requests of a running daemon — fetch, release, pin, unpin
// (see control.h for the wire format).
//
// - fetch [-r]: lists every unlisted directory of the subtrees first, then makes every
//   file fully present with `parallel` files at a time, in pieces (so a cancel takes
//   effect within one piece). Progress goes out every 250 ms. A cancelled or failed job
//   keeps everything fetched so far.
// - pin [-r]: marks the files pinned (kept out of eviction), then fetches them.
// - unpin [-r]: clears the pin; content stays until the quota wants it.
// - release [-r]: Hydrator::release in batches; pinned files are skipped (reported), files
//   in use are skipped (reported), never waited for.
// A directory without `recursive` is an error (EISDIR), as with rm/cp.
//
// Contract: runCacheJob() answers `request` on `conn` (progress lines, then exactly one
// final object) and returns when the job ends: done, failed, the client closed the
// connection, or `stopping` became true. Called on a thread of its own; everything in
// JobContext must outlive the call.
#pragma once

#include <atomic>

#include <nlohmann/json.hpp>

#include "cache/cache_store.h"
#include "core/hydrator.h"
#include "core/namespace_populator.h"
#include "frontend/frontend.h"

namespace hsm::cli {

struct JobContext {
  core::Hydrator& hydrator;
  core::NamespacePopulator& populator;
  cache::CacheStore& cache;
  frontend::Frontend& frontend;
  const std::atomic<bool>& stopping;
  size_t parallel = 4;  // files fetched at once
};

bool isCacheJob(const std::string& op);
void runCacheJob(const JobContext& ctx, int conn, const nlohmann::json& request);

}  // namespace hsm::cli
