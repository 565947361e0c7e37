// atomic_write_file: the new content appears whole, a failing writer (exception or full disk) leaves the old
// file and no temp file behind, and a missing directory gives a clear error.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include "io/atomic_file.h"
#include "io_test_util.h"
#include "io/safetensors.h"

using namespace dsv3;
using namespace dsv3::io;
using namespace dsv3::io::test;

namespace {

// Names in `dir` other than `keep`: leftovers such as temp files.
std::vector<std::string> other_files(const std::filesystem::path& dir, const std::string& keep) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename() != keep) out.push_back(e.path().filename().string());
  return out;
}

}  // namespace

TEST(AtomicFile, WritesAndReplaces) {
  TempDir dir;
  const std::string path = dir / "f.txt";
  atomic_write_file(path, "first");
  EXPECT_EQ(read_bytes(path), "first");
  atomic_write_file(path, [](std::FILE* f) {
    for (int i = 0; i < 1000; ++i) std::fputs("0123456789", f);
  });
  EXPECT_EQ(read_bytes(path).size(), 10000u);
  atomic_write_file(path, std::string_view());
  EXPECT_EQ(read_bytes(path), "");
  EXPECT_TRUE(other_files(dir.path, "f.txt").empty());
}

TEST(AtomicFile, ExceptionInBodyKeepsOldFile) {
  TempDir dir;
  const std::string path = dir / "f.txt";
  atomic_write_file(path, "old contents");
  EXPECT_THROW(atomic_write_file(path,
                                 [](std::FILE* f) {
                                   std::fputs("half of the new", f);
                                   throw std::runtime_error("writer failed");
                                 }),
               std::runtime_error);
  EXPECT_EQ(read_bytes(path), "old contents");
  EXPECT_TRUE(other_files(dir.path, "f.txt").empty()) << "temp file left behind";
  // Also when no old file existed.
  const std::string fresh = dir / "fresh.txt";
  EXPECT_THROW(atomic_write_file(fresh, [](std::FILE*) { throw Error("nope"); }), Error);
  EXPECT_FALSE(std::filesystem::exists(fresh));
  EXPECT_TRUE(other_files(dir.path, "f.txt").empty());
}

TEST(AtomicFile, MissingDirectory) {
  TempDir dir;
  const std::string path = dir / "no/such/dir/f.txt";
  expect_error([&] { atomic_write_file(path, "x"); }, {path, "does not exist"});
  expect_error([&] { atomic_write_file(dir.path.string(), "x"); }, {"is a directory"});
}

TEST(AtomicFile, DiskFullLeavesOldFile) {
  TempDir dir;
  const std::string mnt = dir / "tiny";
  std::filesystem::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64k") != 0)
    GTEST_SKIP() << "cannot mount a 64 KiB tmpfs to simulate ENOSPC (needs root / CAP_SYS_ADMIN): "
                 << std::strerror(errno);
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};

  const std::string path = mnt + "/weights.safetensors";
  atomic_write_file(path, "old");
  const std::string big(1 << 20, 'x');  // 1 MiB into a 64 KiB filesystem
  expect_error([&] { atomic_write_file(path, big); }, {path, "No space left on device"});
  EXPECT_EQ(read_bytes(path), "old");
  EXPECT_TRUE(other_files(mnt, "weights.safetensors").empty()) << "temp file left behind";

  // The safetensors writer goes through the same path.
  expect_error([&] { write_safetensors(path, {{"w", make_tensor(DType::F32, {256, 256})}}); },
               {path, "No space left on device"});
  EXPECT_EQ(read_bytes(path), "old");
  EXPECT_TRUE(other_files(mnt, "weights.safetensors").empty());
}
