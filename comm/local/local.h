// The local backend: N ranks as threads of one process over in-memory mailboxes, for unit tests
// and for simulating N workers on one machine (`tern-train --comm local --ranks N`).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"

namespace tern {

// n communicators of one world, rank i at index i. They may be used from n different threads.
std::vector<std::unique_ptr<Communicator>> make_local_world(int n, const CommOptions& options = {});

// Runs body(comm) on n threads, one per rank, and joins them. If any rank throws, the first
// exception (by time) is rethrown after all threads ended; ranks blocked on a failed peer end by
// their timeout or by the world being torn down, never hang.
void run_local(int n, const std::function<void(Communicator&)>& body, const CommOptions& options = {});

// A one-rank communicator ("single"): what a program gets with no launcher.
std::unique_ptr<Communicator> make_single_communicator(const CommOptions& options = {});

// An in-memory Store shared by threads (tests, and the local backend's rendezvous).
std::shared_ptr<Store> make_memory_store();

}  // namespace tern
