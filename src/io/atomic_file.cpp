// Atomic whole-file writes (see atomic_file.h): temp file in the target directory, fsync, rename, fsync dir.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "dsv3/error.h"

namespace dsv3::io {

namespace {

std::string errno_text(int err) { return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")"; }

std::string parent_dir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? std::string(".") : dir;
}

std::string temp_name(const std::string& path) {
  std::random_device rd;
  uint64_t r = (uint64_t(rd()) << 32) ^ rd();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(r));
  return path + ".tmp." + std::to_string(::getpid()) + "." + buf;
}

// Makes the directory entry change (the rename) durable. Some filesystems refuse fsync on a directory
// (EINVAL); the data itself is already synced then, so that case is not an error.
void fsync_dir(const std::string& dir, const std::string& path) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DSV3_CHECK(fd >= 0, "wrote '", path, "' but cannot open its directory '", dir, "' to fsync it: ", errno_text(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  DSV3_CHECK(rc == 0 || err == EINVAL || err == EROFS, "wrote '", path, "' but fsync of directory '", dir,
             "' failed: ", errno_text(err));
}

}  // namespace

void fwrite_checked(std::FILE* f, const void* data, size_t n, const std::string& what) {
  if (n == 0) return;
  errno = 0;
  size_t done = std::fwrite(data, 1, n, f);
  if (done != n) {
    int err = errno ? errno : EIO;
    DSV3_FAIL("write error on '", what, "' after ", done, " of ", n, " bytes: ", errno_text(err));
  }
}

void atomic_write_file(const std::string& path, const std::function<void(std::FILE*)>& write_body) {
  DSV3_CHECK(!path.empty(), "atomic_write_file: empty path");
  const std::string dir = parent_dir(path);
  std::error_code ec;
  DSV3_CHECK(std::filesystem::is_directory(dir, ec), "cannot write '", path, "': directory '", dir,
             "' does not exist");
  DSV3_CHECK(!std::filesystem::is_directory(path, ec), "cannot write '", path, "': it is a directory");

  const std::string tmp = temp_name(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  DSV3_CHECK(fd >= 0, "cannot create temporary file '", tmp, "' for '", path, "': ", errno_text(errno));
  std::FILE* f = ::fdopen(fd, "wb");
  if (f == nullptr) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    DSV3_FAIL("cannot open stream on '", tmp, "' for '", path, "': ", errno_text(err));
  }

  // Everything from here on either installs the file or removes the temp file.
  auto abandon = [&]() {
    if (f) std::fclose(f);
    f = nullptr;
    ::unlink(tmp.c_str());
  };
  try {
    write_body(f);
  } catch (...) {
    abandon();
    throw;
  }
  auto fail = [&](const char* step, int err) {
    abandon();
    DSV3_FAIL("writing '", path, "' failed at ", step, ": ", errno_text(err), "; the old file (if any) is untouched");
  };
  if (std::ferror(f)) fail("write (stream error flag set)", errno ? errno : EIO);
  if (std::fflush(f) != 0) fail("fflush", errno);
  if (::fsync(::fileno(f)) != 0) fail("fsync", errno);
  int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) fail("fclose", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("rename of the temporary file", errno);
  fsync_dir(dir, path);
}

void atomic_write_file(const std::string& path, std::string_view bytes) {
  atomic_write_file(path, [&](std::FILE* f) { fwrite_checked(f, bytes.data(), bytes.size(), path); });
}

}  // namespace dsv3::io
