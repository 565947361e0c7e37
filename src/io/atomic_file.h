// Atomic whole-file writes: a reader of PATH sees either the old file or the complete new one, never a
// partial write, even if the process dies or the disk fills up half way.
//
// Recipe: create PATH.tmp.<pid>.<random> in the same directory (same filesystem, so rename is atomic),
// let the caller stream the body into it, fflush + fsync it, rename it over PATH, fsync the directory so
// the rename itself is durable. On any failure the temp file is removed, PATH is left as it was and a
// dsv3::Error carrying the errno text is thrown (an exception thrown by the body propagates unchanged).
// Not handled: preserving the old file's permissions/owner (the new file gets 0666 & ~umask).
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace dsv3::io {

// Runs write_body on a FILE* opened for binary writing and atomically installs the result as `path`.
void atomic_write_file(const std::string& path, const std::function<void(std::FILE*)>& write_body);
void atomic_write_file(const std::string& path, std::string_view bytes);

// fwrite that throws dsv3::Error("write error on <what>: <strerror>") on a short write (e.g. ENOSPC).
// Meant for use inside write_body; `what` names the file for the message.
void fwrite_checked(std::FILE* f, const void* data, size_t n, const std::string& what);

}  // namespace dsv3::io
