#include "daemon/daemon.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include "base/unique_fd.h"
#include "cell/dispatcher.h"
#include "cell/key_loader.h"
#include "cell/key_memory.h"
#include "cell/sandbox.h"
#include "cell/server.h"

namespace kc::daemon {
namespace {

// The first descriptor that systemd passes with socket activation.
constexpr int kListenFdsStart = 3;
// The maximum number of supplementary groups read with SO_PEERGROUPS.
constexpr size_t kMaxPeerGroups = 256;

std::string Hex(const uint8_t *bytes, size_t length) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (size_t i = 0; i < length; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 15]);
  }
  return out;
}

std::string Fingerprint(const std::vector<uint8_t> &public_key) {
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(public_key.data(), public_key.size(), digest, &length,
                 EVP_sha256(), nullptr) != 1) {
    return "";
  }
  return Hex(digest, length);
}

void Harden() {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

// The daemon's state, shared with the callbacks that run on the workers.
struct Daemon {
  explicit Daemon(bool foreground)
      : logger(foreground, true),
        dispatcher(
            catalog,
            [this](const std::string &line) { logger.Log(LOG_WARNING, line); }),
        server(dispatcher) {}

  Logger logger;
  cell::KeyCatalog catalog;
  cell::Dispatcher dispatcher;
  cell::Server server;
  DaemonConfig config;
  UniqueFd listener;
  UniqueFd signals;
  // False with socket activation, where the socket file belongs to systemd.
  bool owns_socket_file = false;
  // Without --foreground: the pipe whose first byte signals to the parent
  // that the daemon is serving.
  UniqueFd ready;
  // /dev/null, held so that a descriptor can be freed when they run out;
  // see RefuseConnection.
  UniqueFd spare;
  // RLIMIT_NOFILE at start, for messages; the seccomp filter denies
  // reading it later.
  rlim_t descriptor_limit = 0;
};

void LogKeys(Daemon &daemon, const std::vector<cell::CatalogKey> &keys) {
  for (const cell::CatalogKey &key : keys) {
    daemon.logger.Log(LOG_INFO, "loaded key '" + key.name + "' type " +
                                    protocol::KeyTypeName(key.key->type) +
                                    " fingerprint SHA256:" + key.fingerprint);
  }
}

// Binds a new listening socket at config.socket. A socket file that no
// process accepts on is stale and removed first. Any other file, or a
// socket that accepts, stops the start.
Result<UniqueFd> BindSocket(const DaemonConfig &config) {
  const std::string &path = config.socket;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);

  struct stat info;
  if (lstat(path.c_str(), &info) == 0) {
    if (!S_ISSOCK(info.st_mode)) {
      return Status(Code::kInvalidArgument,
                    path +
                        " exists and is not a socket; remove it or set "
                        "another \"socket\" path");
    }
    UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (connect(probe.get(), reinterpret_cast<sockaddr *>(&address),
                sizeof(address)) == 0) {
      return Status(Code::kInvalidArgument, "another keycelld is running on " +
                                                path + "; stop it first");
    }
    if (errno != ECONNREFUSED) {
      return Status(Code::kInvalidArgument, "cannot check the socket " + path +
                                                ": " + std::strerror(errno));
    }
    if (unlink(path.c_str()) != 0) {
      return Status(Code::kInvalidArgument, "cannot remove the stale socket " +
                                                path + ": " +
                                                std::strerror(errno));
    }
  } else if (errno != ENOENT) {
    return Status(Code::kInvalidArgument,
                  "cannot inspect " + path + ": " + std::strerror(errno));
  }

  UniqueFd listener(
      socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener.valid()) {
    return Status(Code::kInternal,
                  std::string("socket failed: ") + std::strerror(errno));
  }
  // The file appears with mode 0600, so no client connects before its mode
  // and group are set.
  mode_t old_umask = umask(0177);
  int bound = bind(listener.get(), reinterpret_cast<sockaddr *>(&address),
                   sizeof(address));
  int bind_error = errno;
  umask(old_umask);
  if (bound != 0) {
    return Status(Code::kInvalidArgument,
                  "cannot bind " + path + ": " + std::strerror(bind_error));
  }
  if (!config.socket_group.empty() &&
      chown(path.c_str(), static_cast<uid_t>(-1), config.socket_gid) != 0) {
    int error = errno;
    unlink(path.c_str());
    return Status(Code::kInvalidArgument, "cannot set the group of " + path +
                                              " to " + config.socket_group +
                                              ": " + std::strerror(error));
  }
  if (chmod(path.c_str(), config.socket_mode) != 0 ||
      listen(listener.get(), SOMAXCONN) != 0) {
    int error = errno;
    unlink(path.c_str());
    return Status(Code::kInvalidArgument, "cannot set up the socket " + path +
                                              ": " + std::strerror(error));
  }
  return listener;
}

// Returns the socket that systemd passed (LISTEN_PID and LISTEN_FDS), or an
// invalid descriptor when keycelld was not socket-activated.
UniqueFd TakeActivatedSocket() {
  const char *pid = std::getenv("LISTEN_PID");
  const char *fds = std::getenv("LISTEN_FDS");
  if (pid == nullptr || fds == nullptr ||
      std::strtol(pid, nullptr, 10) != getpid() ||
      std::strtol(fds, nullptr, 10) < 1) {
    return UniqueFd();
  }
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  int fd = kListenFdsStart;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return UniqueFd(fd);
}

UniqueFd OpenSpare() {
  return UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
}

// Runs when accept4 failed with EMFILE or ENFILE. The pending connection
// keeps the listener readable, so leaving it in the backlog would wake a
// worker again at once, for ever. Instead the spare descriptor makes room
// to accept the connection and close it: the peer reads end-of-file
// closed, and the daemon goes on serving the connections it has. Returns
// false when there was no spare to give up.
bool RefuseConnection(Daemon &daemon, int error) {
  if (!daemon.spare.valid()) {
    daemon.spare = OpenSpare();
    if (!daemon.spare.valid()) {
      return false;
    }
  }
  daemon.spare.reset();
  UniqueFd refused(
      accept4(daemon.listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  refused.reset();
  daemon.spare = OpenSpare();
  daemon.logger.Log(LOG_WARNING,
                    std::string("out of file descriptors (") +
                        std::strerror(error) + ", RLIMIT_NOFILE " +
                        std::to_string(daemon.descriptor_limit) +
                        " at start): closing new connections until others "
                        "close");
  return true;
}

void AcceptConnections(Daemon &daemon) {
  for (;;) {
    UniqueFd fd(accept4(daemon.listener.get(), nullptr, nullptr,
                        SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if ((errno == EMFILE || errno == ENFILE) &&
          RefuseConnection(daemon, errno)) {
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        daemon.logger.Log(
            LOG_ERR, std::string("accept failed: ") + std::strerror(errno));
      }
      return;
    }
    auto context = std::make_shared<cell::ConnectionContext>();
    ucred credentials{};
    socklen_t length = sizeof(credentials);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) !=
        0) {
      daemon.logger.Log(
          LOG_ERR, std::string("SO_PEERCRED failed: ") + std::strerror(errno));
      continue;
    }
    context->pid = credentials.pid;
    context->uid = credentials.uid;
    context->gid = credentials.gid;
    std::vector<gid_t> groups(kMaxPeerGroups);
    socklen_t groups_length =
        static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERGROUPS, groups.data(),
                   &groups_length) == 0) {
      groups.resize(groups_length / sizeof(gid_t));
      context->groups = std::move(groups);
    } else {
      // NOTE: a peer in more than kMaxPeerGroups groups is matched by its
      // uid and primary group only.
      daemon.logger.Log(LOG_WARNING,
                        "SO_PEERGROUPS failed for pid " +
                            std::to_string(credentials.pid) + ": " +
                            std::strerror(errno) +
                            "; matching by uid and primary group only");
    }
    Status added = daemon.server.AddConnection(
        std::move(fd), protocol::Framing::kPlain, std::move(context));
    if (!added.ok()) {
      daemon.logger.Log(LOG_ERR, "cannot serve a connection of pid " +
                                     std::to_string(credentials.pid) + ": " +
                                     added.message());
    }
  }
}

void Reload(Daemon &daemon) {
  daemon.logger.Log(LOG_INFO, "reloading " + daemon.config.path);
  Result<DaemonConfig> config = LoadConfig(daemon.config.path);
  if (!config.ok()) {
    daemon.logger.Log(LOG_ERR, "reload failed, keeping the current keys: " +
                                   config.status().message());
    return;
  }
  Result<std::vector<cell::CatalogKey>> keys = LoadKeys(*config);
  if (!keys.ok()) {
    daemon.logger.Log(LOG_ERR, "reload failed, keeping the current keys: " +
                                   keys.status().message());
    return;
  }
  const DaemonConfig &old = daemon.config;
  if (config->socket != old.socket || config->socket_mode != old.socket_mode ||
      config->socket_group != old.socket_group || config->user != old.user ||
      config->workers != old.workers) {
    daemon.logger.Log(LOG_WARNING,
                      "a reload applies only key blocks; restart keycelld "
                      "to apply socket, socket_mode, socket_group, user and "
                      "workers");
  }
  std::set<std::string> old_names;
  for (const auto &key : daemon.catalog.Snapshot()) {
    old_names.insert(key->name);
  }
  std::set<std::string> new_names;
  for (const cell::CatalogKey &key : *keys) {
    new_names.insert(key.name);
  }
  for (const std::string &name : old_names) {
    if (new_names.count(name) == 0) {
      daemon.logger.Log(LOG_INFO, "removed key '" + name + "'");
    }
  }
  LogKeys(daemon, *keys);
  size_t count = keys->size();
  daemon.catalog.Replace(std::move(*keys));
  daemon.config.keys = config->keys;
  daemon.logger.Log(LOG_INFO,
                    "reload done: serving " + std::to_string(count) + " keys");
}

[[noreturn]] void Stop(Daemon &daemon, int signal_number) {
  if (daemon.owns_socket_file && unlink(daemon.config.socket.c_str()) != 0) {
    daemon.logger.Log(LOG_ERR, "cannot remove the socket " +
                                   daemon.config.socket + ": " +
                                   std::strerror(errno));
  }
  daemon.logger.Log(LOG_INFO,
                    std::string("stopping on ") + sigabbrev_np(signal_number));
  // Workers may be inside requests, so static destructors must not run.
  _exit(0);
}

void HandleSignals(Daemon &daemon) {
  signalfd_siginfo info;
  while (read(daemon.signals.get(), &info, sizeof(info)) == sizeof(info)) {
    if (info.ssi_signo == SIGHUP) {
      Reload(daemon);
    } else {
      Stop(daemon, static_cast<int>(info.ssi_signo));
    }
  }
}

// Forks the process that becomes the daemon and returns in it the write
// end of a pipe for FinishDetach. The original process waits on the pipe
// and exits 0 once the child reports that its socket and keys are ready,
// or 1 when the child exits before, so a start script gets failures as the
// exit status. Forking first keeps the daemon in the process that creates
// the secure heap, because fork does not pass memory locks to the child.
UniqueFd StartDetach(Daemon &daemon) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    daemon.logger.Log(LOG_ERR,
                      std::string("pipe2 failed: ") + std::strerror(errno));
    _exit(1);
  }
  pid_t child = fork();
  if (child < 0) {
    daemon.logger.Log(LOG_ERR,
                      std::string("fork failed: ") + std::strerror(errno));
    _exit(1);
  }
  if (child > 0) {
    close(ready[1]);
    char byte = 0;
    ssize_t n;
    do {
      n = read(ready[0], &byte, 1);
    } while (n < 0 && errno == EINTR);
    _exit(n == 1 ? 0 : 1);
  }
  close(ready[0]);
  return UniqueFd(ready[1]);
}

// Detaches the daemon from the terminal. The waiting parent is released
// later, by a write to the ready pipe.
void DetachFromTerminal(Daemon &daemon) {
  setsid();
  if (chdir("/") != 0) {
    daemon.logger.Log(LOG_WARNING,
                      std::string("chdir / failed: ") + std::strerror(errno));
  }
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    close(null_fd);
  }
  daemon.logger.set_stderr(false);
}

// Confines keycelld with Landlock and logs the outcome once. Runs after
// the last file that keycelld writes is open (/dev/null on detaching) and
// before the workers start, because Landlock confines only the calling
// thread and the threads it creates later. keycelld may still remove
// files in its socket's directory, for its socket file on SIGTERM. Without
// Landlock, or when confining fails, keycelld keeps serving under its
// seccomp filter alone.
void ConfineWithLandlock(Daemon &daemon) {
  std::string socket_dir;
  if (daemon.owns_socket_file) {
    socket_dir = daemon.config.socket.substr(
        0, std::max<size_t>(1, daemon.config.socket.rfind('/')));
  }
  Result<int> landlock = cell::RestrictWithLandlock(socket_dir);
  if (!landlock.ok()) {
    daemon.logger.Log(LOG_WARNING, landlock.status().message());
  } else if (*landlock == 0) {
    daemon.logger.Log(LOG_WARNING,
                      "the kernel offers no Landlock; file writes are "
                      "limited by the seccomp filter alone");
  } else {
    daemon.logger.Log(
        LOG_INFO,
        "confined by Landlock ABI " + std::to_string(*landlock) +
            ": no file changes" +
            (socket_dir.empty() ? std::string()
                                : " except removing files in " + socket_dir));
  }
}

}  // namespace

Result<std::vector<cell::CatalogKey>> LoadKeys(const DaemonConfig &config) {
  std::vector<cell::CatalogKey> keys;
  std::string errors;
  for (const KeyConfig &key_config : config.keys) {
    cell::PassphraseSource passphrase;
    passphrase.file = key_config.passphrase_file;
    Result<cell::LoadedKey> loaded =
        cell::LoadKeyFile(key_config.file, passphrase);
    if (!loaded.ok()) {
      if (!errors.empty()) {
        errors += "\n";
      }
      errors += config.path + ":" + std::to_string(key_config.line) +
                ": key '" + key_config.name +
                "' failed to load: " + loaded.status().message();
      continue;
    }
    Result<std::shared_ptr<cell::CellKey>> key =
        cell::NewCellKey(std::move(loaded->pkey), loaded->type,
                         key_config.policy, key_config.name);
    if (!key.ok()) {
      if (!errors.empty()) {
        errors += "\n";
      }
      errors += config.path + ":" + std::to_string(key_config.line) +
                ": key '" + key_config.name + "': " + key.status().message();
      continue;
    }
    cell::CatalogKey entry;
    entry.name = key_config.name;
    entry.key = std::move(key.value());
    entry.fingerprint = Fingerprint(loaded->public_key);
    entry.public_key = std::move(loaded->public_key);
    entry.allow_users = key_config.allow_users;
    entry.allow_groups = key_config.allow_groups;
    keys.push_back(std::move(entry));
  }
  if (!errors.empty()) {
    return Status(Code::kKeyLoadFailed, errors);
  }
  return keys;
}

int CheckConfig(const std::string &path) {
  Result<DaemonConfig> config = LoadConfig(path);
  if (!config.ok()) {
    std::fprintf(stderr, "keycelld: %s\n", config.status().message().c_str());
    return 1;
  }
  Result<std::vector<cell::CatalogKey>> keys = LoadKeys(*config);
  if (!keys.ok()) {
    std::fprintf(stderr, "%s\n", keys.status().message().c_str());
    return 1;
  }
  for (const cell::CatalogKey &key : *keys) {
    std::printf("key %s: %s, SHA256:%s\n", key.name.c_str(),
                protocol::KeyTypeName(key.key->type), key.fingerprint.c_str());
  }
  std::printf("%s: configuration valid, %zu %s\n", path.c_str(), keys->size(),
              keys->size() == 1 ? "key" : "keys");
  return 0;
}

// Raises the soft limit on open descriptors to the hard limit, because
// every connection takes one, and returns the limit.
rlim_t RaiseDescriptorLimit() {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) {
    return 0;
  }
  if (files.rlim_cur < files.rlim_max) {
    rlimit raised = {files.rlim_max, files.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      files = raised;
    }
  }
  return files.rlim_cur;
}

int RunDaemon(const std::string &path, bool foreground) {
  Harden();
  signal(SIGPIPE, SIG_IGN);
  rlim_t descriptors = RaiseDescriptorLimit();
  // The daemon lives until _exit, so it is never destroyed.
  static Daemon *daemon = new Daemon(true);
  daemon->spare = OpenSpare();
  daemon->descriptor_limit = descriptors;
  if (!foreground) {
    daemon->ready = StartDetach(*daemon);
  }
  daemon->logger.Log(LOG_INFO, "starting with " + path);
  // Before any key is loaded, so that every private key lands in the
  // secure heap.
  cell::KeyMemory memory = cell::SetUpKeyMemory(cell::kDaemonArenaSize);
  daemon->logger.Log(
      memory.state == cell::KeyMemoryState::kLocked ? LOG_INFO : LOG_WARNING,
      cell::DescribeKeyMemory(memory));

  Result<DaemonConfig> config = LoadConfig(path);
  if (!config.ok()) {
    daemon->logger.Log(LOG_ERR, config.status().message());
    return 1;
  }
  daemon->config = std::move(*config);

  Result<std::vector<cell::CatalogKey>> keys = LoadKeys(daemon->config);
  if (!keys.ok()) {
    daemon->logger.Log(LOG_ERR, keys.status().message());
    return 1;
  }
  LogKeys(*daemon, *keys);
  daemon->catalog.Replace(std::move(*keys));

  daemon->listener = TakeActivatedSocket();
  if (daemon->listener.valid()) {
    daemon->logger.Log(LOG_INFO, "using the socket passed by systemd");
  } else {
    Result<UniqueFd> listener = BindSocket(daemon->config);
    if (!listener.ok()) {
      daemon->logger.Log(LOG_ERR, listener.status().message());
      return 1;
    }
    daemon->listener = std::move(*listener);
    daemon->owns_socket_file = true;
  }

  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGHUP);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGINT);
  // Blocked before any worker exists, so every thread inherits the mask and
  // the signals arrive only through the signalfd.
  sigprocmask(SIG_BLOCK, &handled, nullptr);
  daemon->signals.reset(signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK));

  auto fail = [&](const std::string &message) {
    daemon->logger.Log(LOG_ERR, message);
    if (daemon->owns_socket_file) {
      unlink(daemon->config.socket.c_str());
    }
    return 1;
  };
  if (!daemon->signals.valid()) {
    return fail(std::string("signalfd failed: ") + std::strerror(errno));
  }
  if (!daemon->config.user.empty()) {
    Status dropped = cell::SwitchUser(daemon->config.user);
    if (!dropped.ok()) {
      return fail(dropped.message());
    }
    daemon->logger.Log(LOG_INFO, "running as user " + daemon->config.user);
  }
  Status init = daemon->server.Init();
  if (!init.ok()) {
    return fail(init.message());
  }
  Status watched = daemon->server.Watch(daemon->listener.get(),
                                        [] { AcceptConnections(*daemon); });
  if (watched.ok()) {
    watched = daemon->server.Watch(daemon->signals.get(),
                                   [] { HandleSignals(*daemon); });
  }
  if (!watched.ok()) {
    return fail(watched.message());
  }
  if (!foreground) {
    DetachFromTerminal(*daemon);
  }
  ConfineWithLandlock(*daemon);
  unsigned workers = daemon->config.workers;
  if (workers == 0) {
    workers = std::max(1u, std::thread::hardware_concurrency());
  }
  daemon->logger.Log(LOG_INFO,
                     "serving on " + daemon->config.socket + " with " +
                         std::to_string(workers) + " workers and at most " +
                         std::to_string(descriptors) + " open descriptors");
  daemon->server.Run(workers, [] {
    Status filtered = cell::InstallSyscallFilter(cell::SandboxProfile::kDaemon);
    if (!filtered.ok()) {
      daemon->logger.Log(LOG_ERR, filtered.message());
      if (daemon->owns_socket_file) {
        unlink(daemon->config.socket.c_str());
      }
      _exit(1);
    }
    if (daemon->ready.valid()) {
      char byte = 0;
      (void)!write(daemon->ready.get(), &byte, 1);
      daemon->ready.reset();
    }
  });
}

}  // namespace kc::daemon
