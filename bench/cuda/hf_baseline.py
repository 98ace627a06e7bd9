# Hugging Face transformers generate() on the same shape, random weights,
# bf16, eager attention: the baseline of the CUDA speed goals (tokens/s at
# batch 1 and 16). Run by bench/cuda/run.sh on the GPU machine.
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM

cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=False,
                  rope_theta=500000.0, max_position_embeddings=4096, attn_implementation="eager")
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
new = int(sys.argv[1]) if len(sys.argv) > 1 else 128
for bs in (1, 16):
    ids = torch.randint(1, 1000, (bs, 128), device="cuda")
    with torch.no_grad():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
        torch.cuda.synchronize()
        t = time.time()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        torch.cuda.synchronize()
        dt = time.time() - t
    print(f"transformers batch {bs}: {bs * new / dt:.1f} tok/s (bf16, eager, {new} new tokens)")
