#pragma once
// A fresh directory under the system's temp dir, removed with everything in it by the
// destructor.

#include <filesystem>
#include <string>

namespace medusa::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace medusa::testing
