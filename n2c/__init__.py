"""n2c: trained PyTorch CNNs to one-timestep spiking networks on Loihi-class chips.

Pipeline (each arrow a function from one saved artifact to the next):

    model ──ingest──▶ canonical fx graph ──convert──▶ SNN (torch) ──export──▶ NIR
    NIR ──import──▶ layer IR ──quantize──▶ integer IR ─┬─▶ reference simulator
                                                      ├─▶ Lava processes
                                                      └─▶ report
"""

__version__ = "0.1.0"
