#pragma once
#include <napi.h>

#include "kernels/sample.h"

namespace gptoss {
// Reads {temperature, topK, topP, minP, presencePenalty, frequencyPenalty, repetitionPenalty,
// biasIds, biasValues, historyIds, historyCounts, banFrom, allowMask} (typed arrays for the lists), checking
// ranges against the vocabulary size V.
SampleParams parse_sample_params(Napi::Object o, int V);
Napi::Object sampler_exports(Napi::Env env, Napi::Object exports);
}  // namespace gptoss
