"""Writes a tiny Qwen2-architecture GGUF in F16 with seeded random weights, for llama-quantize to
quantize into a fixture (tools/make-quantize-fixture.sh). One layer, hidden 256, 4 heads of 64
(2 KV heads), FFN 256, vocabulary 128, tied embeddings.

Usage: tiny_qwen2.py OUT.gguf
"""
import sys

import numpy as np
from gguf import GGUFWriter, LlamaFileType

E, FF, V, H, HKV = 256, 256, 128, 4, 2
D = E // H


def main():
    rng = np.random.default_rng(7)
    w = GGUFWriter(sys.argv[1], "qwen2")
    w.add_name("qgguf tiny qwen2 fixture")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(E)
    w.add_feed_forward_length(FF)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(LlamaFileType.MOSTLY_F16)

    def mat(rows, cols, std=0.02):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float16)

    def vec(n, mean=0.0, std=0.1):
        return (mean + rng.standard_normal(n) * std).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(V, E))
    w.add_tensor("output_norm.weight", vec(E, 1.0))
    w.add_tensor("blk.0.attn_norm.weight", vec(E, 1.0))
    w.add_tensor("blk.0.attn_q.weight", mat(H * D, E))
    w.add_tensor("blk.0.attn_q.bias", vec(H * D))
    w.add_tensor("blk.0.attn_k.weight", mat(HKV * D, E))
    w.add_tensor("blk.0.attn_k.bias", vec(HKV * D))
    w.add_tensor("blk.0.attn_v.weight", mat(HKV * D, E))
    w.add_tensor("blk.0.attn_v.bias", vec(HKV * D))
    w.add_tensor("blk.0.attn_output.weight", mat(E, H * D))
    w.add_tensor("blk.0.ffn_norm.weight", vec(E, 1.0))
    w.add_tensor("blk.0.ffn_gate.weight", mat(FF, E))
    w.add_tensor("blk.0.ffn_up.weight", mat(FF, E))
    # Heavier tails in one matrix so the K-quant searches meet outliers.
    w.add_tensor("blk.0.ffn_down.weight", (rng.standard_t(3.0, (E, FF)) * 0.02).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
