# The detkit demo pipeline, one Makefile target per artifact.
#
#   make demo            (from the repository root: sets up .venv, then runs this file)
#   make -f examples/demo.mk DEMO=demo    (with `detkit` on PATH)
#
# Every target is a file, so a second run does nothing and touching an input re-runs
# only the stages downstream of it. Every command writes atomically: an interrupted
# run never leaves a file that make would take as fresh.

DETKIT ?= detkit
DEMO ?= demo
DATA := $(DEMO)/data
SIZE ?= 256
MODEL ?= yolov3-tiny
# teacher and student widths (channel multipliers)
WIDTH ?= 0.25
STUDENT_WIDTH ?= 0.125
IMAGES ?= 400
SEED ?= 0
BATCH ?= 16
LR ?= 2e-3
BOTTLENECK_EPOCHS ?= 5
EPOCHS ?= 16
DISTILL_EPOCHS ?= 16
# options every model-running stage shares (training stages add --seed)
MODEL_ARGS = --model $(MODEL) --anchors $(DEMO)/anchors.txt --classes $(DATA)/classes.txt \
             --input-size $(SIZE)
COMMON = $(MODEL_ARGS) --seed $(SEED)

.PHONY: all
all: $(DEMO)/summary.txt

# 1. a synthetic dataset: images/, train.txt, val.txt, classes.txt, val.json
$(DATA)/train.txt:
	$(DETKIT) synth $(DATA) --images $(IMAGES) --size $(SIZE) --classes 4 --seed $(SEED) \
	    --val-fraction 0.2

# 2. anchors fitted to the training boxes (6 anchors: two strides of yolov3-tiny)
$(DEMO)/anchors.txt: $(DATA)/train.txt
	$(DETKIT) kmeans-anchors $< --k 6 --input-size $(SIZE) --seed $(SEED) --out $@

# 3. training targets of every image (letterboxed, no augmentation)
$(DEMO)/labels.npz: $(DATA)/train.txt $(DEMO)/anchors.txt
	$(DETKIT) encode-labels $< --anchors $(DEMO)/anchors.txt --classes $(DATA)/classes.txt \
	    --input-size $(SIZE) --out $@

# 4. the frozen body's features of every image, computed once
$(DEMO)/bottlenecks.h5: $(DATA)/train.txt $(DEMO)/anchors.txt
	$(DETKIT) cache-bottlenecks $< $(COMMON) --width $(WIDTH) --out $@

# 5. stage 1: heads on the cached features, body frozen
$(DEMO)/stage1/best.weights.h5: $(DEMO)/bottlenecks.h5 $(DEMO)/labels.npz
	$(DETKIT) train $(DATA)/train.txt --stage 1 $(COMMON) --width $(WIDTH) \
	    --bottlenecks $(DEMO)/bottlenecks.h5 --labels $(DEMO)/labels.npz \
	    --bottleneck-epochs $(BOTTLENECK_EPOCHS) --epochs 0 --batch-size $(BATCH) --val $(DATA)/val.txt \
	    --out $(DEMO)/stage1

# 6. stage 2: fine-tune everything at a lower learning rate
$(DEMO)/stage2/best.weights.h5: $(DEMO)/stage1/best.weights.h5
	$(DETKIT) train $(DATA)/train.txt --stage 2 $(COMMON) --width $(WIDTH) \
	    --weights $< --epochs $(EPOCHS) --batch-size $(BATCH) --lr $(LR) --val $(DATA)/val.txt \
	    --out $(DEMO)/stage2

# 7. a smaller student distilled from the stage-2 teacher
$(DEMO)/student/best.weights.h5: $(DEMO)/stage2/best.weights.h5
	$(DETKIT) distill $(DATA)/train.txt --teacher $< --teacher-model $(MODEL) \
	    --teacher-width $(WIDTH) $(COMMON) --width $(STUDENT_WIDTH) --alpha 0.5 \
	    --stage 2 --epochs $(DISTILL_EPOCHS) --batch-size $(BATCH) --lr $(LR) --val $(DATA)/val.txt \
	    --out $(DEMO)/student

# 8. COCO mAP of teacher and student on the validation split
$(DEMO)/teacher_report.json: $(DEMO)/stage2/best.weights.h5
	$(DETKIT) eval-map $(DATA)/val.json $(MODEL_ARGS) --width $(WIDTH) --weights $< \
	    --metric coco --out $@

$(DEMO)/student_report.json: $(DEMO)/student/best.weights.h5
	$(DETKIT) eval-map $(DATA)/val.json $(MODEL_ARGS) --width $(STUDENT_WIDTH) --weights $< \
	    --metric coco --out $@

# 9. the comparison table
$(DEMO)/summary.txt: $(DEMO)/teacher_report.json $(DEMO)/student_report.json
	$(DETKIT) compare $^ --out $@
