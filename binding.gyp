{
  # CPU-only build of native/ + kernels/cpu/ for node-gyp (the fallback path of node-gyp-build).
  # The real build is CMakeLists.txt (cmake-js), which adds CUDA when nvcc is found.
  "variables": { "simd_defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"] },
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "."],
    "defines": ["<@(simd_defines)", "NAPI_CPP_EXCEPTIONS"]
  },
  "targets": [
    {
      "target_name": "gptoss_simd_avx2",
      "type": "static_library",
      "sources": ["kernels/cpu/simd_avx2.cc"],
      "cflags_cc": ["-mavx2", "-mfma", "-mf16c"]
    },
    {
      "target_name": "gptoss_simd_avx512",
      "type": "static_library",
      "sources": ["kernels/cpu/simd_avx512.cc"],
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c", "-Wno-uninitialized"]
    },
    {
      "target_name": "gptoss_simd_avx512bf16",
      "type": "static_library",
      "sources": ["kernels/cpu/simd_avx512bf16.cc"],
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mavx2", "-mfma"]
    },
    {
      "target_name": "gptoss",
      "dependencies": ["gptoss_simd_avx2", "gptoss_simd_avx512", "gptoss_simd_avx512bf16"],
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native').filter(f=>f.endsWith('.cc')).map(f=>'native/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/runtime').filter(f=>f.endsWith('.cc')).map(f=>'native/runtime/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f=>f.endsWith('.cc')).map(f=>'native/cpu/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('kernels/cpu').filter(f=>f.endsWith('.cc')&&!/simd_avx/.test(f)).map(f=>'kernels/cpu/'+f).join(' ')\")"
      ],
      "libraries": ["-lpthread"]
    }
  ]
}
