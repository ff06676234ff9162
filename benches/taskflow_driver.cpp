// Issue 15's yardstick: the shapes of benches/throughput.rs run by Taskflow (C++), built and run
// by benches/taskflow.sh against a Taskflow checkout of the user's (nothing of Taskflow is in
// this repository). Timed as pexen's `ns_per_task`: the graph built (one no-op lambda per task,
// the same edges), run on an executor of 2 workers, and destroyed; the executor itself is
// created before the clock starts, as pexen's worker threads are part of its run.
//
// Usage: taskflow_driver SHAPE TASKS
// Prints: SHAPE tasks=N ns_per_task=X bytes_per_task=Y (peak resident growth per task).
#include <taskflow/taskflow.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

// Resident set size in bytes, from /proc (`VmRSS:` or the peak `VmHWM:`).
static unsigned long rss(const char* field) {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind(field, 0) == 0) {
            return std::stoul(line.substr(std::strlen(field))) * 1024;
        }
    }
    return 0;
}

// The xorshift of benches/throughput.rs, same seed: the same random DAG.
struct Rng {
    unsigned long state;
    size_t below(size_t n) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        return state % n;
    }
};

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s SHAPE TASKS\n", argv[0]);
        return 2;
    }
    const std::string shape = argv[1];
    const size_t n = std::stoul(argv[2]);
    if (shape != "independent" && shape != "chain" && shape != "fan-out" &&
        shape != "random-dag4" && shape != "one-lock") {
        std::fprintf(stderr, "unknown shape %s\n", shape.c_str());
        return 2;
    }
    tf::Executor executor(2);
    const unsigned long before = rss("VmRSS:");
    const auto start = std::chrono::steady_clock::now();
    {
        tf::Taskflow flow;
        std::vector<tf::Task> tasks;
        tasks.reserve(n);
        tf::Semaphore lock(1);
        Rng rng{0x9E3779B97F4A7C15ul};
        for (size_t i = 0; i < n; i++) {
            tasks.push_back(flow.emplace([] {}));
            if (shape == "chain" && i > 0) {
                tasks[i - 1].precede(tasks[i]);
            } else if (shape == "fan-out" && i > 0) {
                tasks[0].precede(tasks[i]);
            } else if (shape == "random-dag4" && i > 0) {
                for (int k = 0; k < 4; k++) {
                    tasks[rng.below(i)].precede(tasks[i]);
                }
            } else if (shape == "one-lock") {
                tasks[i].acquire(lock);
                tasks[i].release(lock);
            }
        }
        executor.run(flow).wait();
    }
    const double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s tasks=%zu ns_per_task=%.0f bytes_per_task=%lu\n", shape.c_str(), n, ns / n,
                (rss("VmHWM:") - before) / n);
    return 0;
}
