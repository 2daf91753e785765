// CRC32C (Castagnoli), with the SSE4.2 instruction where the CPU has it and a
// table otherwise. Used by the WAL record format.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringq::uring {

// Extends `crc` (0 to start) over data[0, n).
uint32_t Crc32c(uint32_t crc, const void* data, size_t n);
bool Crc32cHardware();

}  // namespace ringq::uring
