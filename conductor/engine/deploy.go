package engine

import (
	"context"
	"fmt"

	"github.com/ingot-dev/ingot/conductor/node"
)

// deployer is one deploy interface's behaviour.
type deployer interface {
	// validate checks the node carries what a deployment needs.
	validate(n *node.Node) error
	// deploy starts a deployment of a node in "deploying" and returns
	// EventDone when it finished or EventWait when an agent must call back.
	deploy(ctx context.Context, n *node.Node) (node.Event, error)
	// tearDown undoes a deployment (power off, boot configuration).
	tearDown(ctx context.Context, n *node.Node) error
	// clean starts cleaning of a node in "cleaning" and returns EventDone
	// or EventWait.
	clean(ctx context.Context, n *node.Node, manual bool) (node.Event, error)
	// abort cleans up after an operator aborted a wait.
	abort(ctx context.Context, n *node.Node) error
}

// deployInterface returns the deployer for n's deploy_interface.
func (e *Engine) deployInterface(n *node.Node) (deployer, error) {
	switch n.Interfaces.Deploy {
	case "fake":
		return fakeDeploy{e: e}, nil
	case "direct":
		return directDeploy{e: e}, nil
	case "iscsi":
		return iscsiDeploy{directDeploy{e: e}}, nil
	}
	return nil, node.Errorf(node.ErrInvalid, "deploy interface %q of node %s is not available in this conductor", n.Interfaces.Deploy, n.UUID)
}

// validateForDeploy runs the checks Ironic runs before accepting a deploy:
// power and deploy interfaces must validate.
func (e *Engine) validateForDeploy(ctx context.Context, n *node.Node, di deployer) error {
	if err := e.validatePower(n); err != nil {
		return node.Errorf(node.ErrInvalid, "Failed to validate deploy or power info for node %s. Errors: %v", n.UUID, err)
	}
	if err := di.validate(n); err != nil {
		return node.Errorf(node.ErrInvalid, "Failed to validate deploy or power info for node %s. Errors: %v", n.UUID, err)
	}
	return nil
}

// validatePower reports the first problem of n's power interface.
func (e *Engine) validatePower(n *node.Node) error {
	if err := e.drivers.Validate(n)[node.KindPower]; err != nil {
		return err
	}
	return nil
}

// fakeDeploy is Ironic's "fake" deploy interface: deployments and cleaning
// finish at once without touching the machine. Manual clean steps are
// recorded as run.
type fakeDeploy struct{ e *Engine }

func (fakeDeploy) validate(*node.Node) error { return nil }

func (fakeDeploy) deploy(context.Context, *node.Node) (node.Event, error) {
	return node.EventDone, nil
}

func (fakeDeploy) tearDown(context.Context, *node.Node) error { return nil }

func (f fakeDeploy) clean(_ context.Context, n *node.Node, manual bool) (node.Event, error) {
	if manual {
		steps, _ := n.DriverInternalInfo["clean_steps"].([]any)
		for _, s := range steps {
			f.e.log.Info("fake clean step", "node", n.UUID, "step", fmt.Sprint(s))
		}
	}
	return node.EventDone, nil
}

func (fakeDeploy) abort(context.Context, *node.Node) error { return nil }
