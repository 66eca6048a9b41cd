#pragma once
// Runs one gtest of this binary as several ranks (RANK / WORLD_SIZE / MASTER_ADDR /
// MASTER_PORT set as torchrun would), with a deadline: a rank stuck in a collective is
// killed, never waited for forever.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace vilau::testing {

struct RankExit {
  bool exited = false;  // false: killed at the deadline
  int code = -1;
  std::string log;  // stdout and stderr
};

// A TCP port nobody listens on right now.
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t size = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size);
  close(fd);
  return ntohs(addr.sin_port);
}

inline std::vector<RankExit> spawn_ranks(const std::string& test, int world,
                                         const std::vector<std::string>& extra_env,
                                         const std::string& log_dir,
                                         std::chrono::seconds deadline_after) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::string(*e).rfind("GTEST_", 0) != 0) env.emplace_back(*e);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  env.push_back("OMP_NUM_THREADS=1");
  env.push_back("WORLD_SIZE=" + std::to_string(world));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back("MASTER_PORT=" + std::to_string(free_port()));
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world; ++rank) {
    std::vector<std::string> child_env = env;
    child_env.push_back("RANK=" + std::to_string(rank));
    child_env.push_back("LOCAL_RANK=" + std::to_string(rank));
    std::vector<char*> envp, argv;
    for (auto& s : child_env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string exe = "/proc/self/exe", filter = "--gtest_filter=" + test;
    argv = {exe.data(), filter.data(), nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = log_dir + "/rank" + std::to_string(rank) + ".log";
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = 0;
    if (posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp.data()) != 0) {
      pid = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    pids.push_back(pid);
  }
  const auto deadline = std::chrono::steady_clock::now() + deadline_after;
  std::vector<int> status(pids.size(), -1);
  std::vector<bool> done(pids.size(), false), killed(pids.size(), false);
  for (size_t finished = 0; finished < pids.size();) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (!done[i] && (pids[i] < 0 || waitpid(pids[i], &status[i], WNOHANG) == pids[i])) {
        done[i] = true;
        ++finished;
      }
    }
    if (finished < pids.size() && std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (!done[i]) {
          kill(pids[i], SIGKILL);
          waitpid(pids[i], &status[i], 0);
          killed[i] = done[i] = true;
          ++finished;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::vector<RankExit> out(pids.size());
  for (size_t i = 0; i < pids.size(); ++i) {
    out[i].exited = !killed[i] && pids[i] >= 0 && WIFEXITED(status[i]);
    out[i].code = out[i].exited ? WEXITSTATUS(status[i]) : -1;
    std::stringstream log;
    log << std::ifstream(log_dir + "/rank" + std::to_string(i) + ".log").rdbuf();
    out[i].log = log.str();
  }
  return out;
}

}  // namespace vilau::testing
