#pragma once
// A read-only file mapping shared by the model readers (gguf_map,
// safetensors_map): tensor data is paged in when read, and a loader that
// converts tensor by tensor drops each one's pages afterwards, so it holds
// about one tensor of the file at a time.
#include <cstddef>
#include <memory>
#include <string>

#include "core/status.h"

namespace bk {

// Maps path; *mapping unmaps with its last copy. `what` names the format in
// messages ("GGUF file"). An empty file is an error.
Status map_file_readonly(const std::string& path, const char* what, std::shared_ptr<void>* mapping, size_t* size);
// Drops the whole pages inside [p, p + n) from this process (MADV_DONTNEED on
// a private read-only mapping: they are read again from the file if touched).
void release_mapped_range(const void* p, size_t n);

}  // namespace bk
