# Written with sfvq_ext at commit 78519b6 (before issue 13): files in the formats of that version.
import torch, sfvq_ext
torch.manual_seed(0)
x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
m = sfvq_ext.SFVQ(3, 4, gradient="none")
opt = torch.optim.Adam(m.parameters(), lr=1e-2)
for step in range(40):
    _, _, loss = m(x); opt.zero_grad(); loss.backward(); opt.step()
    if step == 19: m.expand(); opt = torch.optim.Adam(m.parameters(), lr=1e-2)
assert m.codebook_size == 8
torch.save(m.state_dict(), "tests/data/legacy_sfvq_state_dict.pt")
sfvq_ext.save(m, "tests/data/legacy_curve.safetensors")
class Stop(Exception): pass
def stop(info):
    if (info["bits"], info["step"]) == (3, 5): raise Stop
try:
    sfvq_ext.fit(x, 3, epochs=2, batch_size=32, seed=1, checkpoint="tests/data/legacy_fit_checkpoint.safetensors",
                 checkpoint_every=4, progress=False, callback=stop, eval_samples=200, init_samples=200)
except Stop: pass
print(m.state_dict().keys(), m.codebook)
