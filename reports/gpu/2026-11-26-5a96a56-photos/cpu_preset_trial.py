"""plain loop, candidate presets, on several datasets: python try.py NAME H L HEADS INTER IMG PATCH LR EPOCHS DATASET [SEED]"""
import sys, time, json
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))  # the repository
from vitcore import model, data, plain
from vitcore.model import ModelPreset, Recipe
name, h, L, heads, inter, img, patch = sys.argv[1], *map(int, sys.argv[2:8])
lr, epochs, ds = float(sys.argv[8]), int(sys.argv[9]), sys.argv[10]
seed = int(sys.argv[11]) if len(sys.argv) > 11 else 42
model.PRESETS[name] = ModelPreset(name=name, hidden_size=h, num_layers=L, num_heads=heads, intermediate_size=inter,
    image_size=img, patch_size=patch, recipe=Recipe(lr=lr, weight_decay=0.05, warmup_ratio=0.1, epochs=epochs, batch_size=32))
try:
    d = data.load(ds, subset=1500)
except Exception:
    d = data.load(ds)
import torch; torch.set_num_threads(2)
r = plain.finetune(d, model=name, lr=lr, weight_decay=0.05, warmup_ratio=0.1, epochs=epochs, batch_size=32, seed=seed)
accs = [round(e["eval_accuracy"], 3) for e in r["epochs"]]
print(json.dumps({"cand": sys.argv[1:], "acc": accs, "s": round(r["seconds"], 1), "n": len(d.train)}), flush=True)
