// CUDA registrations (compiled only when the extension is built with CUDA).
#include <torch/library.h>

#include "ops_common.h"

TORCH_LIBRARY_IMPL(sfvq, CUDA, m) {
  using namespace sfvq;
  m.impl("project", &binding::project<&cuda::project>);
  m.impl("nearest", &binding::nearest<&cuda::nearest>);
  m.impl("decode", &binding::decode<&cuda::decode>);
  m.impl("expand", &binding::expand<&cuda::expand>);
}
